"""The embedded model family: build, cache, reload through the Auto classes; SFT learns with LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from srscale.config import LoraConfig, ModelConfig, SFTConfig, TinyArchConfig
from srscale.models import check_lora_targets, count_parameters, load_tokenizer, peft_config
from srscale.tinymodel import CHAT_TEMPLATE, cache_key, ensure_tiny_model

ARCH = TinyArchConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                      intermediate_size=64, corpus_examples=400, pretrain_steps=80, pretrain_lr=1e-2, pretrain_batch_size=8,
                      pretrain_seq_len=64)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return ensure_tiny_model("unit", ARCH, tmp_path_factory.mktemp("cache"), ("Judge {prompt} {response}",))


def test_build_saves_and_reloads_through_auto_classes(built: Path) -> None:
    assert (built / "build.json").exists() and (built / "config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(built)
    tok = AutoTokenizer.from_pretrained(built)
    assert model.config.model_type == "llama" and model.config.hidden_size == 32
    assert tok.chat_template == CHAT_TEMPLATE
    losses = json.loads((built / "pretrain_losses.json").read_text())
    assert losses[-1] < losses[0], "pretraining should lower the loss"
    text = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                   add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_cache_is_reused_and_keyed_by_settings(built: Path, tmp_path: Path) -> None:
    stamp = (built / "build.json").stat().st_mtime
    again = ensure_tiny_model("unit", ARCH, built.parent.parent, ("Judge {prompt} {response}",))
    assert again == built and (built / "build.json").stat().st_mtime == stamp
    other = TinyArchConfig(**{**ARCH.__dict__, "hidden_size": 64})
    assert cache_key(other) != cache_key(ARCH)
    assert cache_key(ARCH, ("a",)) != cache_key(ARCH, ("b",))


def test_lora_sft_changes_adapter_and_lowers_loss(built: Path, tmp_path: Path) -> None:
    from srscale.config import SuiteSizes
    from srscale.suite.build import build_suite
    from srscale.training import sft

    mcfg = ModelConfig(name="unit", source="tiny", tiny=ARCH, max_length=128)
    # every linear layer: on this 32-wide unit model q,k alone barely move the loss (measured with 20
    # pretraining steps: 4.8033 -> 4.8026 on these rows; the old per-batch check passed on noise)
    lcfg = LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["all-linear"])
    tok = load_tokenizer(mcfg, str(built))
    model = AutoModelForCausalLM.from_pretrained(built)
    assert check_lora_targets(model, ["q_proj", "k_proj"]) == []
    n_base = count_parameters(model)
    data = build_suite(SuiteSizes(ift=160, eft=0, seed_pairs=0, eft_eval=0, heldout=0, seed_prompts=0, probe=0),
                       seed=3, judge_template="{prompt} {response}")
    settings = SFTConfig(learning_rate=5e-3, epochs=3, batch_size=16, logging_steps=2)
    from peft import get_peft_model

    wrapped = get_peft_model(model, peft_config(mcfg, lcfg))
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters() if p.requires_grad}
    loss_before = _completion_loss(wrapped, tok, data.ift)
    trained, result = sft(wrapped, tok, data.ift, settings, peft_config=None, output_dir=tmp_path,
                          max_length=128, seed=0)
    after = dict(trained.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lora_B" in n)
    assert len(result.series("loss")) >= 3
    # the same rows, scored the same way before and after (per-batch training losses are too noisy)
    assert _completion_loss(trained, tok, data.ift) < loss_before - 0.05
    assert (tmp_path / "model" / "adapter_config.json").exists()
    assert count_parameters(trained) == n_base


def _completion_loss(model, tok, rows: list[dict]) -> float:
    """Mean cross-entropy of the response tokens given the chat-rendered prompt (eval mode, no grad)."""
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for r in rows:
            prompt = tok.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                             add_generation_prompt=True)
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            ids = p_ids + tok(r["response"] + tok.eos_token, add_special_tokens=False)["input_ids"]
            labels = [-100] * len(p_ids) + ids[len(p_ids):]
            out = model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels]))
            n = len(ids) - len(p_ids)
            total, count = total + out.loss.item() * n, count + n
    return total / count


def test_long_inputs_are_cut_on_the_left_and_keep_the_generation_prompt(built: Path) -> None:
    from srscale.generation import encode_batch, render_chat, user_turn

    tok = AutoTokenizer.from_pretrained(built)
    long = render_chat(tok, user_turn("Sort these words: " + " ".join(["banana apple"] * 200)))
    short = render_chat(tok, user_turn("What is 2 + 3?"))
    enc = encode_batch(tok, [long, short], max_input_tokens=24)
    assert enc["input_ids"].shape[1] == 24
    for row in enc["input_ids"]:
        assert tok.decode(row, skip_special_tokens=False).endswith("<|end|>\n<|assistant|>\n")
    assert enc["attention_mask"][1, 0] == 0  # the short one is padded on the left


def test_tiny_judge_budget_fits_the_suites_judgments() -> None:
    """conf/judge/tiny.yaml asks for up to 20 words and a score; its token budget must hold every EFT
    target (and the end token) in the tokenizer the default preset builds, or the gate would count
    cut-off judgments as failures."""
    import yaml

    from srscale.config import DataConfig
    from srscale.suite.build import build_suite, pretrain_corpus
    from srscale.tinymodel import TOKENIZER_EXTRA_REPEATS, _default_eval_prompts, train_tokenizer

    conf = Path(__file__).resolve().parents[1] / "conf"
    judge = yaml.safe_load((conf / "judge" / "tiny.yaml").read_text())
    assert "up to 20 words" in judge["template"]
    arch = TinyArchConfig(**yaml.safe_load((conf / "model" / "tiny_1m.yaml").read_text())["tiny"])
    texts = pretrain_corpus(arch.corpus_examples, seed=arch.seed, exclude=_default_eval_prompts())
    tok = train_tokenizer(texts + [judge["template"]] * TOKENIZER_EXTRA_REPEATS, arch.vocab_size)
    data = build_suite(DataConfig().sizes, seed=DataConfig().seed, judge_template=judge["template"])
    longest = max(len(tok(r["response"] + tok.eos_token, add_special_tokens=False)["input_ids"]) for r in data.eft)
    assert longest <= judge["max_new_tokens"], (longest, judge["max_new_tokens"])


def test_tokenizer_keeps_a_word_the_same_token_wherever_it_stands() -> None:
    """Copying from the prompt must be copying tokens: a word or number after a quote, a space or a
    line start is one and the same token, and decoding gives the text back exactly."""
    from srscale.suite.build import pretrain_corpus
    from srscale.tinymodel import train_tokenizer

    tok = train_tokenizer(pretrain_corpus(800, seed=0), 1024)

    def pieces(text: str) -> list[str]:
        return [tok.decode([i]) for i in tok(text, add_special_tokens=False)["input_ids"]]

    word = pieces("apple")
    prompt, answer = pieces("Repeat the word 'apple' 2 times."), pieces("apple apple")
    assert answer == [*word, " ", *word]
    start = prompt.index("'") + 1
    assert prompt[start:start + len(word)] == word and prompt[start + len(word)] == "'"
    number = pieces("23")
    assert pieces("What is 23 + 4?")[4:4 + len(number)] == number  # What, ' ', is, ' ', then 23
    for text in ("Sort 45, 12, 88\n12, 45, 88", "two  spaces\tand a tab", "Ünïcödé 42."):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_sft_loss_covers_the_response_tokens_only(built: Path, tmp_path: Path) -> None:
    from srscale.config import SFTConfig
    from srscale.training import sft_trainer

    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    rows = [{"prompt": "What is 12 + 30? Answer with the number only.", "response": "The answer is 42."}]
    trainer = sft_trainer(model, tok, rows, SFTConfig(max_steps=1, batch_size=1), peft_config=None,
                          output_dir=tmp_path, max_length=128, use_cpu=True)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels, ids = batch["labels"][0].tolist(), batch["input_ids"][0].tolist()
    prompt = tok.apply_chat_template([{"role": "user", "content": rows[0]["prompt"]}], tokenize=True,
                                     add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[:len(prompt)] == prompt
    assert all(label == -100 for label in labels[:len(prompt)])  # no loss on the prompt or the template
    trained = [i for i, label in zip(ids, labels, strict=True) if label != -100]
    assert tok.decode(trained, skip_special_tokens=True).strip() == "The answer is 42."
    assert tok.eos_token_id in trained[-2:]  # the end of turn is learned, so generation stops


@pytest.mark.parametrize(("batching", "sampler"), [("length", "LengthGroupedSampler"), ("random", "RandomSampler"),
                                                 ("kind", "GroupedBatchSampler")])
def test_sft_batches_follow_the_batching_setting(built: Path, tmp_path: Path, batching: str, sampler: str) -> None:
    from srscale.config import SFTConfig
    from srscale.training import sft_trainer

    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    rows = [{"prompt": "Say 'cat'." + " please" * i, "response": "cat", "kind": "ift" if i % 2 else "eft"}
            for i in range(8)]
    trainer = sft_trainer(model, tok, rows, SFTConfig(max_steps=1, batch_size=2, batching=batching),
                          peft_config=None, output_dir=tmp_path, max_length=128, use_cpu=True)
    got = trainer._get_train_sampler()
    assert type(got).__name__ == sampler
    if batching == "kind":  # the trainer's own dataloader yields batches of one kind each
        for batch in trainer.get_train_dataloader():
            kinds = {rows[i]["kind"] for i in range(8) if any(
                tok.decode(ids).count("please") == i for ids in batch["input_ids"])}
            assert len(kinds) == 1


def test_kind_batches_follow_the_rows_trl_drops(built: Path, tmp_path: Path) -> None:
    """A row truncated away entirely (its prompt fills max_length) is dropped by TRL; kinds still line up."""
    from srscale.config import SFTConfig
    from srscale.training import sft_trainer

    tok = AutoTokenizer.from_pretrained(built)
    model = AutoModelForCausalLM.from_pretrained(built)
    rows = [{"prompt": f"Say 'cat' {i} times.", "response": "cat", "kind": "ift"} for i in range(5)]
    rows += [{"prompt": f"Judge {i}: 'dog'.", "response": "Score: 3", "kind": "eft"} for i in range(4)]
    rows.insert(2, {"prompt": "please " * 300, "response": "cat", "kind": "ift"})
    trainer = sft_trainer(model, tok, rows, SFTConfig(max_steps=1, batch_size=2, batching="kind"),
                          peft_config=None, output_dir=tmp_path, max_length=64, use_cpu=True)
    assert len(trainer.train_dataset) == 9
    seen = 0
    for batch in trainer.get_train_dataloader():
        texts = [tok.decode(ids) for ids in batch["input_ids"]]
        assert len({"Judge" in t for t in texts}) == 1, texts
        seen += len(texts)
    assert seen == 9
