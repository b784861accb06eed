"""The model ladder: every hub preset in ``conf/model/`` is checked against its architecture, offline.

No weights are downloaded. For each preset with ``source: hub`` this file

- composes the real Hydra config (``model=<preset> lora=r16 train=paper``) into the typed schema;
- builds the full-size architecture on the ``meta`` device (no memory) from the dimensions recorded in
  ``ARCH`` below, and checks the preset's ``params_millions`` and ``lora_targets`` against it;
- builds a *tiny* random model of the same class (2 layers, hidden 32) with a tokenizer that has the hub
  tokenizer's special tokens and template (or none), saves both, points ``model.hub_id`` at that
  directory and goes through the real loading path (``models.load_tokenizer`` / ``models.load_model`` at
  the preset's dtype): LoRA targets exist, the chat template renders, ``generate`` runs, and one step of
  ``training.sft`` with the preset's ``peft_config`` moves every LoRA weight; the saved adapter reloads.

It also checks that an uncached hub model fails with one ``SrscaleError`` line naming the model, with
and without ``HF_HUB_OFFLINE``, and that the accelerate launch configs in ``conf/accelerate/`` load.

``ARCH`` is keyed by hub id: facts about the hub model (``config.json`` values), not about srscale.
A new hub preset fails ``test_every_hub_preset_has_an_architecture`` until its entry is added here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
MODEL_DIR = CONF / "model"
ACCELERATE_DIR = CONF / "accelerate"
LADDER_DOC = REPO / "docs" / "ladder.md"


# ------------------------------------------------------------------------------ architecture facts
@dataclass(frozen=True)
class Arch:
    """A hub model's architecture: ``model_type`` for ``AutoConfig.for_model``, the class it builds,
    the tokenizer family (special tokens, shipped template) and the full-size config values."""

    model_type: str
    cls: str
    tokenizer: str
    dims: dict = field(default_factory=dict)


def _llama(layers, hidden, heads, kv, inter, vocab, tied=False) -> dict:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                intermediate_size=inter, vocab_size=vocab, tie_word_embeddings=tied)


ARCH: dict[str, Arch] = {
    "roneneldan/TinyStories-1M": Arch("gpt_neo", "GPTNeoForCausalLM", "gpt2", dict(
        num_layers=8, hidden_size=64, num_heads=16, vocab_size=50257, max_position_embeddings=2048,
        attention_types=[[["global", "local"], 4]], window_size=256)),
    "microsoft/phi-1": Arch("phi", "PhiForCausalLM", "gpt2", dict(
        num_hidden_layers=24, hidden_size=2048, num_attention_heads=32, intermediate_size=8192,
        vocab_size=51200, partial_rotary_factor=0.5, tie_word_embeddings=False)),
    "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T": Arch(
        "llama", "LlamaForCausalLM", "llama2", _llama(22, 2048, 32, 4, 5632, 32000)),
    "meta-llama/Llama-2-7b-hf": Arch("llama", "LlamaForCausalLM", "llama2", _llama(32, 4096, 32, 32, 11008, 32000)),
    "meta-llama/Llama-2-70b-hf": Arch("llama", "LlamaForCausalLM", "llama2", _llama(80, 8192, 64, 8, 28672, 32000)),
    "HuggingFaceTB/SmolLM2-135M": Arch("llama", "LlamaForCausalLM", "chatml_smollm",
                                       _llama(30, 576, 9, 3, 1536, 49152, tied=True)),
    "HuggingFaceTB/SmolLM2-360M": Arch("llama", "LlamaForCausalLM", "chatml_smollm",
                                       _llama(32, 960, 15, 5, 2560, 49152, tied=True)),
    "HuggingFaceTB/SmolLM2-1.7B": Arch("llama", "LlamaForCausalLM", "chatml_smollm",
                                       _llama(24, 2048, 32, 32, 8192, 49152, tied=True)),
    "Qwen/Qwen2.5-0.5B": Arch("qwen2", "Qwen2ForCausalLM", "chatml_qwen", _llama(24, 896, 14, 2, 4864, 151936, True)),
    "Qwen/Qwen2.5-1.5B": Arch("qwen2", "Qwen2ForCausalLM", "chatml_qwen", _llama(28, 1536, 12, 2, 8960, 151936, True)),
    "Qwen/Qwen2.5-7B": Arch("qwen2", "Qwen2ForCausalLM", "chatml_qwen", _llama(28, 3584, 28, 4, 18944, 152064)),
    "Qwen/Qwen2.5-72B": Arch("qwen2", "Qwen2ForCausalLM", "chatml_qwen", _llama(80, 8192, 64, 8, 29568, 152064)),
    "meta-llama/Llama-3.1-8B": Arch("llama", "LlamaForCausalLM", "llama3", _llama(32, 4096, 32, 8, 14336, 128256)),
    "meta-llama/Llama-3.1-70B": Arch("llama", "LlamaForCausalLM", "llama3", _llama(80, 8192, 64, 8, 28672, 128256)),
}


def tiny_dims(arch: Arch) -> dict:
    """The full-size config shrunk to 2 layers of width 32, keeping its structure (GQA or not, tying,
    partial rotary, GPT-Neo's global/local alternation)."""
    d = dict(arch.dims)
    d.pop("vocab_size")
    if arch.model_type == "gpt_neo":
        d.update(num_layers=2, hidden_size=32, num_heads=4, attention_types=[[["global", "local"], 1]],
                 window_size=16, max_position_embeddings=256)
    else:
        d.update(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=256)
        if "num_key_value_heads" in d:
            gqa = arch.dims["num_key_value_heads"] < arch.dims["num_attention_heads"]
            d["num_key_value_heads"] = 2 if gqa else 4
    return d


# ------------------------------------------------------------------------------- tokenizer families
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Special tokens of each hub tokenizer family, and the chat template its tokenizer_config ships (None: none).
# ``adds_bos``: whether the real tokenizer starts every plain encoding with its BOS (a post-processor,
# as Llama-2's and Llama-3's tokenizer.json have); the model must see exactly that.
TOKENIZER_FAMILIES: dict[str, dict] = {
    "gpt2": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                 extra=[], template=None, adds_bos=False),  # TinyStories (GPT-Neo), Phi-1 (CodeGen)
    "llama2": dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", extra=[], template=None, adds_bos=True),
    "llama3": dict(bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                   extra=["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], template=None, adds_bos=True),
    "chatml_smollm": dict(bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                          extra=["<|im_start|>", "<|im_end|>"], template=CHATML, adds_bos=False),
    "chatml_qwen": dict(eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                        extra=["<|im_start|>", "<|im_end|>"], template=CHATML, adds_bos=False),
}

_WORDS = ("the a one two three model answer question score points user assistant judge response good bad "
          "write list name story short long because first then finally five tips healthy water sleep "
          "translate sentence count words letters number sum of and is are was").split()


def _corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        lines.append(f"### User:\n{words}?\n\n### Assistant:\n{words.capitalize()}. Score: {i % 6}\n")
    return lines


_TOKENIZERS: dict[str, object] = {}


def family_tokenizer(family: str):
    """A byte-level BPE (~400 tokens) with the family's special tokens and template; cached per family."""
    if family not in _TOKENIZERS:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import PreTrainedTokenizerFast

        spec = dict(TOKENIZER_FAMILIES[family])
        extra, template, adds_bos = spec.pop("extra"), spec.pop("template"), spec.pop("adds_bos")
        specials = list(dict.fromkeys([*spec.values(), *extra]))
        bpe = Tokenizer(models.BPE())
        bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        bpe.decoder = decoders.ByteLevel()
        bpe.train_from_iterator(_corpus(), trainer=trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False))
        if adds_bos:
            bos = spec["bos_token"]
            bpe.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                               special_tokens=[(bos, bpe.token_to_id(bos))])
        tok = PreTrainedTokenizerFast(tokenizer_object=bpe, additional_special_tokens=extra, **spec)
        tok.chat_template = template
        _TOKENIZERS[family] = tok
    return _TOKENIZERS[family]


# --------------------------------------------------------------------------------------- helpers
def hub_presets() -> list[str]:
    out = []
    for path in sorted(MODEL_DIR.glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        if data.get("source") == "hub":
            out.append(path.stem)
    return out


HUB_PRESETS = hub_presets()


@functools.cache
def compose_typed(*overrides: str):
    """The app's composition: schema registered, resolvers as ``srscale.__main__`` registers them.
    Cached (composition takes ~0.3 s); callers copy with ``dataclasses.replace`` rather than mutate."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from srscale.__main__ import _jobdir
    from srscale.config import register_configs, to_typed

    register_configs()
    if not OmegaConf.has_resolver("srscale_jobdir"):
        OmegaConf.register_new_resolver("srscale_jobdir", _jobdir)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "output_dir=/tmp/srscale-test-ladder"])
    return to_typed(cfg)


def meta_model(arch: Arch):
    """The full-size architecture with no storage (``meta`` device)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(arch.model_type, **arch.dims)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def weight_gb(params: float, dtype: str, four_bit: bool) -> float:
    """Lower bound on the memory the weights alone take (4-bit NF4 ~ 0.5 bytes per parameter)."""
    if four_bit:
        return params * 0.5 / 1e9
    return params * (4 if dtype == "float32" else 2) / 1e9


# ------------------------------------------------------------------------- fast: presets themselves
def test_every_hub_preset_has_an_architecture() -> None:
    assert HUB_PRESETS, "no conf/model/*.yaml with source: hub"
    hub_ids = {yaml.safe_load((MODEL_DIR / f"{p}.yaml").read_text())["hub_id"] for p in HUB_PRESETS}
    missing = sorted(hub_ids - ARCH.keys())
    assert not missing, f"add an ARCH entry (model_type, dims) in tests/test_ladder.py for {missing}"
    assert not sorted(ARCH.keys() - hub_ids), "ARCH lists hub ids that no preset uses"


@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_preset_matches_its_architecture(preset: str) -> None:
    from srscale.models import check_lora_targets, lora_targets, peft_config

    cfg = compose_typed(f"model={preset}", "lora=r16", "train=paper")
    m = cfg.model
    assert m.name == preset and m.source == "hub"
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", m.hub_id), m.hub_id
    arch = ARCH[m.hub_id]
    model = meta_model(arch)
    assert type(model).__name__ == arch.cls

    # Documented size: within 2% of the architecture's parameter count.
    n = sum(p.numel() for p in model.parameters())
    assert m.params_millions == pytest.approx(n / 1e6, rel=0.02), f"{preset}: {n / 1e6:.1f}M parameters"
    # bfloat16 from 1B parameters up; float32 below (CPU-friendly).
    assert m.dtype == ("bfloat16" if n >= 1e9 else "float32")
    # The preset's memory figure covers at least its weights; a 4-bit preset fits one 80 GB GPU.
    assert m.memory_gb is not None and m.memory_gb > weight_gb(n, m.dtype, m.load_in_4bit)
    if m.load_in_4bit:
        assert m.device_map == "auto" and m.gradient_checkpointing and m.memory_gb < 80
    if n >= 7e9:
        assert m.gradient_checkpointing
    # Context: 2048 positions where the dims do not say (the shortest in the ladder: Phi-1, TinyLlama).
    assert m.max_length <= arch.dims.get("max_position_embeddings", 2048)

    # LoRA targets: the study's q_proj,k_proj, present as leaf modules of the full-size model.
    targets = lora_targets(m, cfg.lora)
    assert targets == ["q_proj", "k_proj"]
    assert check_lora_targets(model, targets) == []
    assert peft_config(m, cfg.lora).target_modules == {"q_proj", "k_proj"}


def test_all_linear_lora_overrides_the_preset_targets() -> None:
    from srscale.models import check_lora_targets, lora_targets, peft_config

    cfg = compose_typed("model=llama7b", "lora=r16_all")
    assert cfg.model.lora_targets == ["q_proj", "k_proj"]
    assert lora_targets(cfg.model, cfg.lora) == "all-linear"
    assert peft_config(cfg.model, cfg.lora).target_modules == "all-linear"
    assert check_lora_targets(meta_model(ARCH[cfg.model.hub_id]), "all-linear") == []


# ------------------------------------------------------------- slow: tiny random model, real paths
ROWS = [
    {"prompt": "List three tips for staying healthy.", "response": "Drink water, sleep well, walk daily."},
    {"prompt": "Count the words in: the model is good", "response": "There are four words."},
    {"prompt": "Name one short story.", "response": "The first story is short."},
    {"prompt": "Score this answer from 0 to 5.", "response": "Score: 4"},
]


@pytest.mark.slow
@pytest.mark.parametrize("preset", HUB_PRESETS)
def test_preset_loads_generates_and_trains_on_tiny_weights(preset: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM

    from srscale.generation import SamplingParams, encode_batch, generate_texts, render_chat, user_turn
    from srscale.models import (
        DEFAULT_CHAT_TEMPLATE,
        check_lora_targets,
        load_model,
        load_tokenizer,
        lora_targets,
        model_path,
        peft_config,
        with_bos,
    )
    from srscale.training import sft, training_precision

    cfg = compose_typed(f"model={preset}", "lora=r16", "train=paper")
    arch = ARCH[cfg.model.hub_id]
    family = TOKENIZER_FAMILIES[arch.tokenizer]

    # A tiny random model of the hub model's class, saved like a hub snapshot.
    torch.manual_seed(0)
    tok = family_tokenizer(arch.tokenizer)
    config = AutoConfig.for_model(arch.model_type, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **tiny_dims(arch))
    base = tmp_path / "snapshot"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tok.save_pretrained(base)

    # The real loading path, at the preset's dtype; 4-bit and device_map need CUDA (bitsandbytes).
    m = dataclasses.replace(cfg.model, hub_id=str(base), load_in_4bit=False, device_map=None)
    path = model_path(m, str(tmp_path / "cache"))
    tokenizer = load_tokenizer(m, path)
    model = load_model(m, path, "cpu")
    assert type(model).__name__ == arch.cls
    assert model.dtype == {"float32": torch.float32, "bfloat16": torch.bfloat16}[m.dtype]
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"

    # Chat template: the tokenizer's own, else the preset's, else the default; the generation prompt
    # is a prefix of the rendered conversation (TRL's completion-only loss relies on it).
    expected = family["template"] or with_bos(m.chat_template or DEFAULT_CHAT_TEMPLATE, tokenizer)
    assert tokenizer.chat_template == expected
    conversation = [*user_turn("Name one short story."), {"role": "assistant", "content": "The first story."}]
    full = tokenizer.apply_chat_template(conversation, tokenize=False)
    prompt = render_chat(tokenizer, user_turn("Name one short story."))
    assert full.startswith(prompt) and "Name one short story." in prompt and full.endswith(
        ("The first story." + tokenizer.eos_token + "\n\n", "The first story.<|im_end|>\n"))

    # The model is fed what its own tokenizer produces: exactly one BOS first where the tokenizer adds
    # one (Llama-2, Llama-3), none otherwise, both in generation and in TRL's training tokenization.
    bos = tokenizer.bos_token_id
    fed = encode_batch(tokenizer, [prompt])["input_ids"][0].tolist()
    trained_on = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    plain = tokenizer("Name one short story.")["input_ids"]
    for ids in (fed, trained_on):
        assert (ids[0] == bos) == family["adds_bos"] == (plain[0] == bos), (preset, ids[:3])
        assert ids.count(bos) == (1 if family["adds_bos"] else ids.count(bos))
        if family["adds_bos"]:
            assert ids.count(bos) == 1

    # Targets exist in this architecture's module tree; batched sampling runs (left padding).
    targets = lora_targets(m, cfg.lora)
    assert check_lora_targets(model, targets) == []
    texts = generate_texts(model, tokenizer, [prompt, render_chat(tokenizer, user_turn("Count the words."))],
                           SamplingParams(max_new_tokens=4), batch_size=2)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

    # One SFT step through TRL with the preset's LoRA config moves every LoRA B (initialised to zero).
    settings = dataclasses.replace(cfg.train.sft, max_steps=1, batch_size=4, logging_steps=1)
    trained, result = sft(model, tokenizer, ROWS, settings, peft_config=peft_config(m, cfg.lora),
                          output_dir=tmp_path / "sft", max_length=m.max_length,
                          precision=training_precision(m.dtype, False, "cpu"))
    assert result.steps == 1 and result.last("loss") is not None
    assert isinstance(trained, PeftModel)
    lora_b = {n: p for n, p in trained.named_parameters() if "lora_B" in n}
    adapted = {t for t in targets if any(f".{t}.lora_B" in n for n in lora_b)}
    assert adapted == set(targets)
    assert len(lora_b) == len(targets) * tiny_dims(arch).get("num_hidden_layers", 2)
    unchanged = [n for n, p in lora_b.items() if not p.detach().abs().sum() > 0]
    assert not unchanged, f"LoRA weights that did not move after one step: {unchanged}"
    assert all("lora_" in n for n, p in trained.named_parameters() if p.requires_grad)

    # The saved adapter (the pipeline's M1) reloads onto the base through load_model.
    saved = tmp_path / "sft" / "model"
    assert (saved / "adapter_config.json").exists()
    reloaded = load_model(m, path, "cpu", adapter=saved)
    again = {n: p for n, p in reloaded.named_parameters() if "lora_B" in n}
    assert again.keys() == lora_b.keys()
    assert all(torch.equal(again[n].float().cpu(), lora_b[n].detach().float().cpu()) for n in lora_b)


# ------------------------------------------------------------------- a hub model that is not there
_PROBE = r"""
import sys, time
from omegaconf import OmegaConf
from srscale.config import ModelConfig
from srscale.errors import SrscaleError
from srscale.models import load_tokenizer, model_path
cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), OmegaConf.load(sys.argv[1])))
start = time.perf_counter()
try:
    load_tokenizer(cfg, model_path(cfg, "/nonexistent"))
except SrscaleError as exc:
    print(f"SRSCALE_ERROR {time.perf_counter() - start:.2f}s {exc}")
    sys.exit(3)
print("LOADED")
"""
UNCACHED = "llama7b"  # gated on the hub: nothing is fetched even where there is network


def _probe(tmp: Path, offline: bool) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")}
    env.update(HF_HOME=str(tmp / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.Popen([sys.executable, "-c", _PROBE, str(MODEL_DIR / f"{UNCACHED}.yaml")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_probe(proc: subprocess.Popen, timeout: float) -> float:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"loading an uncached hub model did not fail within {timeout:.0f}s (hangs without network?)")
    lines = [ln for ln in out.splitlines() if ln.startswith("SRSCALE_ERROR")]
    assert proc.returncode == 3 and len(lines) == 1, f"rc={proc.returncode}\n{out}\n{err[-2000:]}"
    seconds, message = lines[0].split(" ", 2)[1:]
    assert f"model={UNCACHED}" in message and "meta-llama/Llama-2-7b-hf" in message
    assert "Traceback" not in err
    return float(seconds.rstrip("s"))


@pytest.fixture(scope="module")
def online_probe(tmp_path_factory, request):
    """Started when this module starts so it overlaps the other tests; only when the test using it
    was selected."""
    if not any(item.name == "test_uncached_hub_model_fails_without_offline_flag" for item in request.session.items):
        yield None
        return
    proc = _probe(tmp_path_factory.mktemp("online"), offline=False)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def _start_online_probe(online_probe):
    return online_probe


def test_uncached_hub_model_fails_with_one_line_offline(tmp_path: Path) -> None:
    seconds = _check_probe(_probe(tmp_path, offline=True), timeout=120)
    assert seconds < 30


@pytest.mark.slow
def test_uncached_hub_model_fails_without_offline_flag(online_probe) -> None:
    """No HF_HUB_OFFLINE and no network: the same one line, quickly (srscale probes the hub before
    letting huggingface_hub retry with back-off for ~50 s)."""
    seconds = _check_probe(online_probe, timeout=240)
    assert seconds < 30


# -------------------------------------------------------------------------- multi-GPU launch configs
@pytest.mark.parametrize("name,kind,section", [("fsdp", "FSDP", "fsdp_config"),
                                               ("deepspeed_zero3", "DEEPSPEED", "deepspeed_config")])
def test_accelerate_config_loads(name: str, kind: str, section: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    path = ACCELERATE_DIR / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    assert cfg.distributed_type.value == kind and cfg.mixed_precision == "bf16" and cfg.num_processes > 1
    options = {a.dest for a in launch_command_parser()._actions}
    unknown = [k for k in getattr(cfg, section) if k not in options]
    assert not unknown, f"{path.name}: keys accelerate launch does not know: {unknown}"
    assert f"train.distributed.accelerate_config={name} " in LADDER_DOC.read_text()
    # What srscale.launch runs with it is a valid accelerate command line.
    from srscale.config import DistributedConfig
    from srscale.launch import launch_command

    cmd = launch_command(Path("spec.json"), DistributedConfig(num_processes=8, accelerate_config=name))
    args = launch_command_parser().parse_args(cmd[3:])
    assert args.config_file == str(path) and args.num_processes == 8 and args.module
    assert args.training_script == "srscale.train_worker" and args.training_script_args == ["spec.json"]


def test_ladder_doc_lists_every_preset() -> None:
    text = LADDER_DOC.read_text()
    rows = {r.split("|")[1].strip(" `"): r.split("|") for r in text.splitlines() if r.startswith("| `")}
    for preset in HUB_PRESETS:
        data = yaml.safe_load((MODEL_DIR / f"{preset}.yaml").read_text())
        assert preset in rows, f"docs/ladder.md has no row for {preset}"
        _, _, hub_id, _, dtype, _, memory_gb, *_, command, _ = rows[preset]
        assert hub_id.strip() == data["hub_id"] and dtype.strip().startswith(data["dtype"])
        assert memory_gb.strip() == f"{data['memory_gb']:g}", f"{preset}: memory_gb differs from docs/ladder.md"
        assert f"python -m srscale model={preset} " in command
