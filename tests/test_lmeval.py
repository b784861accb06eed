"""lm-eval benchmarks on an in-memory model: local task definitions, data loading, equality with lm-eval
run directly, PEFT models, and the one-line errors."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import torch

from srscale.config import LmEvalConfig
from srscale.errors import SrscaleError
from srscale.evaluation import lmeval
from srscale.evaluation.lm_eval_tasks.utils import LAYOUT

BUILTIN = Path(__import__("lm_eval").__file__).resolve().parent / "tasks"
SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-./]+$")


# ---------------------------------------------------------------- a tiny model


def _corpus(data: Path) -> list[str]:
    lines: list[str] = []
    for rel in ("arc/ARC-Easy-Dev.jsonl", "gsm8k/test.jsonl", "siqa/dev.jsonl", "nq_open/NQ-open.dev.jsonl"):
        with (data / rel).open(encoding="utf-8") as f:
            lines += [line for _, line in zip(range(30), f, strict=False)]
    return lines


@pytest.fixture(scope="module")
def tiny(shared_data):
    """A random 2-layer Llama (hidden 32) with a byte-level BPE tokenizer trained here (vocab 400)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(_corpus(shared_data), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id)
    return LlamaForCausalLM(config), tok


def _cfg(data_dir, tasks, limit, **kw) -> LmEvalConfig:
    return LmEvalConfig(enabled=True, tasks=list(tasks), mode="local", data_dir=str(data_dir), limit=limit, **kw)


# ---------------------------------------------------------------- names and definitions


def test_task_table_maps_both_modes():
    assert lmeval.lm_eval_task_names(["arc_easy", "siqa", "mmlu"], "hub") == ["arc_easy", "social_iqa", "mmlu"]
    assert lmeval.lm_eval_task_names(["arc_easy", "siqa"], "local") == ["srscale_arc_easy", "srscale_siqa"]
    assert lmeval.lm_eval_task_names(["lambada_openai"], "hub") == ["lambada_openai"]  # any lm-eval task
    with pytest.raises(SrscaleError, match="no local definition"):
        lmeval.lm_eval_task_names(["lambada_openai"], "local")
    # metric keys use srscale's names whichever mode ran
    for name, (hub, local) in lmeval.TASKS.items():
        assert lmeval.srscale_task_name(hub) == lmeval.srscale_task_name(local) == name
    assert lmeval.srscale_task_name("srscale_mmlu_stem") == lmeval.srscale_task_name("mmlu_stem") == "mmlu_stem"


def _yaml(path: Path) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(path, resolve_func=False)


# everything that decides what the model sees and how it is scored
SAME_FIELDS = ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "target_delimiter",
               "fewshot_delimiter", "description", "metric_list", "generation_kwargs", "filter_list",
               "num_fewshot", "repeats", "should_decontaminate", "doc_to_decontamination_query")
BUILTIN_YAML = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                "hellaswag": "hellaswag/hellaswag.yaml", "siqa": "siqa/siqa.yaml", "piqa": "piqa/piqa.yaml",
                "gsm8k": "gsm8k/gsm8k.yaml", "openbookqa": "openbookqa/openbookqa.yaml",
                "nq_open": "nq_open/nq_open.yaml"}


@pytest.mark.parametrize("name", sorted(BUILTIN_YAML))
def test_local_task_definition_matches_lm_eval(name):
    ours, theirs = _yaml(lmeval.TASKS_DIR / f"{name}.yaml"), _yaml(BUILTIN / BUILTIN_YAML[name])
    assert ours["task"] == lmeval.TASKS[name][1] and theirs["task"] == lmeval.TASKS[name][0]
    for field in SAME_FIELDS:
        assert ours.get(field) == theirs.get(field), (name, field)
    assert ours["metadata"]["version"] == theirs["metadata"]["version"]


def test_local_mmlu_matches_lm_eval():
    builtin = BUILTIN / "mmlu" / "default"
    subjects = sorted(p.stem.removeprefix("mmlu_") for p in builtin.glob("mmlu_*.yaml"))
    assert len(subjects) == 57
    for subject in subjects:
        ours = _yaml(lmeval.TASKS_DIR / "mmlu" / f"mmlu_{subject}.yaml")
        theirs = _yaml(builtin / f"mmlu_{subject}.yaml")
        assert ours["task"] == f"srscale_mmlu_{subject}" and ours["tag"] == f"srscale_{theirs['tag']}"
        assert ours["dataset_kwargs"] == {"subject": theirs["dataset_name"]}
        for field in (*SAME_FIELDS, "task_alias", "fewshot_split", "test_split", "fewshot_config"):
            assert ours.get(field) == theirs.get(field), (subject, field)
    for group in ("", "_stem", "_other", "_social_sciences", "_humanities"):
        ours, theirs = _yaml(lmeval.TASKS_DIR / "mmlu" / f"_mmlu{group}.yaml"), _yaml(builtin / f"_mmlu{group}.yaml")
        assert ours["group"] == f"srscale_{theirs['group']}"
        assert ours["task"] == [f"srscale_{t}" for t in theirs["task"]]
        assert ours.get("group_alias") == theirs.get("group_alias")
        assert ours["aggregate_metric_list"] == theirs["aggregate_metric_list"]


# ---------------------------------------------------------------- local data


def _docs(task, n=5):
    docs = task.eval_docs
    return [docs[i] for i in range(min(n, len(docs)))], len(docs)


@pytest.mark.slow
def test_local_tasks_load_shared_data(shared_data):
    manager = lmeval.task_manager("local", shared_data)
    expected = {  # task: (documents, choices per document or None for generation)
        "arc_easy": (570, {3, 4, 5}), "arc_challenge": (299, {3, 4, 5}), "hellaswag": (10042, {4}),
        "piqa": (1838, {2}), "siqa": (1954, {3}), "openbookqa": (500, {4}),
        "gsm8k": (1319, None), "nq_open": (3610, None),
    }
    for name, (n_docs, n_choices) in expected.items():
        [task] = lmeval.load_tasks(lmeval.lm_eval_task_names([name], "local"), manager, "local")
        docs, total = _docs(task)
        assert total == n_docs, name
        for doc in docs:
            assert task.doc_to_text(doc).strip(), name
            target = task.doc_to_target(doc)
            if n_choices is None:
                assert task.config.output_type == "generate_until"
                assert target
            else:
                choices = task.doc_to_choice(doc)
                assert len(choices) in n_choices and all(isinstance(c, str) and c for c in choices), name
                assert isinstance(target, int) and 0 <= target < len(choices), name

    # spot checks against the files: the first item of each
    def first(name):
        [task] = lmeval.load_tasks([lmeval.TASKS[name][1]], manager, "local")
        doc = task.eval_docs[0]
        return task, doc

    task, doc = first("hellaswag")  # ctx_b capitalized and gold from the 6-line format, as lm-eval builds it
    assert task.doc_to_text(doc) == "Roof shingle removal: A man is sitting on a roof. He"
    assert task.doc_to_target(doc) == 3
    assert task.doc_to_choice(doc)[3] == "starts pulling up roofing on a roof."
    task, doc = first("siqa")  # labels 1-3 in the file, answerC is gold for the first row
    assert task.doc_to_target(doc) == 2 and task.doc_to_choice(doc)[2] == "Find somewhere to go"
    task, doc = first("piqa")
    assert task.doc_to_text(doc).startswith("Question: How do I ready a guinea pig cage")
    assert task.doc_to_target(doc) == 0
    task, doc = first("gsm8k")
    assert task.doc_to_target(doc).endswith("#### 18") and task.config.num_fewshot == 5
    task, doc = first("nq_open")
    assert task.doc_to_text(doc) == "Q: when was the last time anyone was on the moon?\nA:"
    assert task.doc_to_target(doc) == ["14 December 1972 UTC", "December 1972"]
    task, doc = first("openbookqa")
    assert task.doc_to_choice(doc)[task.doc_to_target(doc)] == "quit eating lunch out"

    [mmlu] = lmeval.load_tasks(["srscale_mmlu"], manager, "local")
    subtasks = mmlu.get_all_tasks()
    assert len(subtasks) == 57 and sum(len(t.eval_docs) for t in subtasks) == 14042
    algebra = next(t for t in subtasks if t.task_name == "srscale_mmlu_abstract_algebra")
    doc = algebra.eval_docs[0]
    assert algebra.doc_to_text(doc).endswith("\nA. 0\nB. 4\nC. 2\nD. 6\nAnswer:")
    assert algebra.doc_to_choice(doc) == ["A", "B", "C", "D"] and algebra.doc_to_target(doc) == 1
    assert len(algebra.fewshot_docs()) == 5  # the dev split


# ---------------------------------------------------------------- running


@pytest.mark.slow
def test_all_local_tasks_run_in_process(tiny, shared_data, tmp_path):
    model, tok = tiny
    model.train()
    rng_before = torch.get_rng_state(), random.getstate()
    metrics = lmeval.run_lm_eval(model, tok, _cfg(shared_data, lmeval.TASKS, limit=2), out_dir=tmp_path,
                                 gen_kwargs={"max_gen_toks": 8})
    for key in ("arc_easy/acc", "arc_easy/acc_norm", "arc_challenge/acc_norm", "hellaswag/acc_norm",
                "siqa/acc", "piqa/acc_norm", "openbookqa/acc_norm", "gsm8k/exact_match.strict-match",
                "gsm8k/exact_match.flexible-extract", "nq_open/exact_match.remove_whitespace", "mmlu/acc",
                "mmlu_stem/acc", "mmlu_humanities/acc", "mmlu_abstract_algebra/acc"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert all(SAFE_KEY.match(k) for k in metrics)
    assert model.training and torch.equal(torch.get_rng_state(), rng_before[0]) and random.getstate() == rng_before[1]

    saved = json.loads((tmp_path / lmeval.RESULTS_FILE).read_text())
    assert saved["results"]["srscale_arc_easy"]["acc,none"] == metrics["arc_easy/acc"]
    assert saved["n-samples"]["srscale_arc_easy"]["effective"] == 2
    assert saved["n-samples"]["srscale_mmlu_anatomy"]["effective"] == 2
    assert saved["configs"]["srscale_gsm8k"]["generation_kwargs"]["max_gen_toks"] == 8
    assert saved["configs"]["srscale_gsm8k"]["num_fewshot"] == 5


@pytest.mark.slow
def test_in_memory_run_equals_lm_eval_run_directly(tiny, shared_data, tmp_path):
    """run_lm_eval on the in-memory model == `lm_eval --model hf` on the same model saved to disk."""
    import lm_eval

    model, tok = tiny
    mine = lmeval.run_lm_eval(model, tok, _cfg(shared_data, ["arc_easy", "siqa"], limit=20, batch_size=4))

    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    manager = lmeval.task_manager("local", shared_data)  # = --include_path TASKS_DIR --metadata {"data_dir": ..}
    direct = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={tmp_path / 'model'},dtype=float32", device="cpu",
        tasks=["srscale_arc_easy", "srscale_siqa"], task_manager=manager, limit=20, batch_size=4,
    )
    theirs = lmeval.flatten_results(direct)
    assert set(mine) == set(theirs)
    assert set(mine) >= {"arc_easy/acc", "arc_easy/acc_norm", "siqa/acc"}
    for key, value in mine.items():
        assert value == pytest.approx(theirs[key], abs=1e-6), key
    assert direct["n-samples"]["srscale_arc_easy"]["effective"] == 20


@pytest.mark.slow
def test_peft_model_runs_with_its_adapter(tiny, shared_data):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    try:
        cfg = _cfg(shared_data, ["piqa"], limit=10)
        with_adapter = lmeval.run_lm_eval(peft_model, tok, cfg)
        assert set(with_adapter) == {"piqa/acc", "piqa/acc_stderr", "piqa/acc_norm", "piqa/acc_norm_stderr"}
        assert all(0.0 <= v <= 1.0 for v in with_adapter.values())
        assert peft_model.active_adapter == "default"
    finally:
        peft_model.unload()  # give the shared fixture its plain model back


# ---------------------------------------------------------------- errors


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_local_file_is_one_line(tiny, shared_data, tmp_path):
    model, tok = tiny
    (tmp_path / "arc").mkdir()
    (tmp_path / "arc" / "ARC-Easy-Dev.jsonl").write_bytes((shared_data / "arc" / "ARC-Easy-Dev.jsonl").read_bytes())
    with pytest.raises(SrscaleError) as err:
        lmeval.run_lm_eval(model, tok, _cfg(tmp_path, ["arc_easy", "piqa"], limit=2))
    msg = _one_line(err)
    assert str(tmp_path / "piqa" / "valid.jsonl") in msg and "piqa/valid-labels.lst" in msg

    with pytest.raises(SrscaleError) as err:
        lmeval.run_lm_eval(model, tok, _cfg(tmp_path, ["mmlu"], limit=2))
    assert "mmlu/test/abstract_algebra_test.csv" in _one_line(err)

    with pytest.raises(SrscaleError) as err:
        lmeval.run_lm_eval(model, tok, LmEvalConfig(tasks=["arc_easy"], mode="local", data_dir=None))
    assert "eval.lm_eval.data_dir" in _one_line(err)

    with pytest.raises(SrscaleError) as err:
        lmeval.run_lm_eval(model, tok, _cfg(tmp_path / "nowhere", ["arc_easy"], limit=2))
    assert "is not a folder" in _one_line(err)


def test_layout_table_names_every_file_the_loaders_read(shared_data):
    for name, files in LAYOUT.items():
        for rel in files:
            rel = rel.replace("<subject>", "abstract_algebra")
            assert (shared_data / rel).is_file(), (name, rel)


@pytest.mark.slow
def test_hub_mode_offline_names_the_task_and_local_mode(tiny, monkeypatch):
    """No network here: the hub dataset cannot load, and the error says how to run locally."""
    import datasets
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    model, tok = tiny
    with pytest.raises(SrscaleError) as err:
        lmeval.run_lm_eval(model, tok, LmEvalConfig(tasks=["siqa"], mode="hub", limit=2))
    msg = _one_line(err)
    assert "social_iqa" in msg and "eval.lm_eval.mode=local eval.lm_eval.data_dir=" in msg
