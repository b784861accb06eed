"""Build the embedded model family: a Llama-architecture causal LM srscale makes itself.

Steps, once per preset (cached under ``<cache_dir>/models/<name>-<key>``, keyed by the preset's
settings and the builder version):

1. a corpus of short question/answer text from the bundled suite (no judge-format text in it, so the
   base model M0 cannot judge);
2. a byte-level BPE tokenizer trained on that corpus with ``tokenizers``, with a chat template;
3. a Llama model built from a config at the preset's dimensions, briefly pretrained (causal LM) on
   the corpus so that M0 is a base model rather than random weights.

Afterwards the model loads through ``AutoModelForCausalLM.from_pretrained`` like any hub model.
Assumes CPU or one GPU; pretraining takes seconds to a couple of minutes at the ladder's sizes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from srscale.config import TinyArchConfig

log = logging.getLogger(__name__)

BUILDER_VERSION = 3
BOS, EOS, PAD = "<|bos|>", "<|end|>", "<|pad|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")

# Prefix-consistent: rendering [user] with a generation prompt is a prefix of [user, assistant].
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


# How often each extra tokenizer text (the judge prompt) is repeated in the tokenizer's training
# data, so that its words get merges of their own and the rubric costs few tokens per example.
TOKENIZER_EXTRA_REPEATS = 300


def cache_key(arch: TinyArchConfig, tokenizer_extra: tuple[str, ...] = ()) -> str:
    payload = json.dumps({"arch": asdict(arch), "builder": BUILDER_VERSION, "tokenizer_extra": list(tokenizer_extra)},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def model_dir(name: str, arch: TinyArchConfig, cache_dir: str | Path, tokenizer_extra: tuple[str, ...] = ()) -> Path:
    return Path(cache_dir).expanduser() / "models" / f"{name}-{cache_key(arch, tokenizer_extra)}"


def ensure_tiny_model(name: str, arch: TinyArchConfig, cache_dir: str | Path,
                      tokenizer_extra: tuple[str, ...] = ()) -> Path:
    """Return the cached model directory for this preset, building it first if absent.

    ``tokenizer_extra`` (the job's judge prompt) joins the *tokenizer's* training text only; the
    model's pretraining corpus never contains it, so M0 has not seen judge-format text.
    """
    target = model_dir(name, arch, cache_dir, tokenizer_extra)
    if (target / "build.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build_tiny_model(arch, tmp, tokenizer_extra)
        (tmp / "build.json").write_text(json.dumps({"name": name, "arch": asdict(arch),
                                                    "builder": BUILDER_VERSION}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first: keep theirs
            if not (target / "build.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on ``texts``, wrapped as a ``PreTrainedTokenizerFast`` with a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Whitespace is its own token, so a word or number is the same token wherever it stands: "peach"
    # in "Repeat 'peach' twice." and in the answer "peach peach", " 23" in a prompt and "23" at the start
    # of an answer. With GPT-2's space-prefixed pieces those are different tokens, and a tiny model
    # must learn each correspondence before it can copy anything (measured: no task learned at all).
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\s"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   additional_special_tokens=list(ROLE_TOKENS))
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 1 << 30
    return fast


def _default_eval_prompts() -> list[str]:
    """Held-out prompts of the default suite and of the nine-family one (``data.families=null``), with
    ``data.seed`` and ``data.sizes`` at their defaults: kept out of pretraining."""
    from srscale.config import DataConfig
    from srscale.suite.build import build_suite

    data = DataConfig()
    out: list[str] = []
    for families in (data.families, None):
        suite = build_suite(data.sizes, seed=data.seed, judge_template="{prompt} {response}", families=families)
        out += [r["prompt"] for split in (suite.heldout, suite.eft_eval, suite.probe, suite.seed_prompts) for r in split]
    return out


def build_tiny_model(arch: TinyArchConfig, out: Path, tokenizer_extra: tuple[str, ...] = ()) -> None:
    """Corpus -> tokenizer -> Llama model -> brief causal-LM pretraining -> ``save_pretrained(out)``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from srscale.suite.build import pretrain_corpus

    torch.manual_seed(arch.seed)
    texts = pretrain_corpus(arch.corpus_examples, seed=arch.seed, exclude=_default_eval_prompts())
    tokenizer = train_tokenizer(texts + [t for t in tokenizer_extra for _ in range(TOKENIZER_EXTRA_REPEATS)],
                                arch.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_kv_heads,
        max_position_embeddings=arch.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=10000.0,
    )
    model = LlamaForCausalLM(config)
    losses = pretrain(model, tokenizer, texts, arch)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "pretrain_losses.json").write_text(json.dumps(losses))


def pretrain(model, tokenizer, texts: list[str], arch: TinyArchConfig) -> list[float]:
    """Causal-LM pretraining on packed chunks of the corpus; returns the loss every 10 steps."""
    if arch.pretrain_steps == 0:
        return []
    rng = random.Random(arch.seed)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    seq = arch.pretrain_seq_len
    n_chunks = max(1, len(ids) // seq)
    data = torch.tensor(ids[: n_chunks * seq]).view(n_chunks, seq)
    opt = torch.optim.AdamW(model.parameters(), lr=arch.pretrain_lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, arch.pretrain_steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, arch.pretrain_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    for step in tqdm(range(arch.pretrain_steps), desc="pretrain M0", leave=False):
        idx = [rng.randrange(n_chunks) for _ in range(arch.pretrain_batch_size)]
        batch = data[idx]
        out = model(input_ids=batch, labels=batch)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == arch.pretrain_steps - 1:
            losses.append(round(out.loss.item(), 4))
    model.eval()
    log.info("pretrained M0: loss %.3f -> %.3f over %d steps", losses[0], losses[-1], arch.pretrain_steps)
    return losses
