"""Real seed data sources on the public files in shared/data, and the pure oasst EFT builder."""

from __future__ import annotations

import gzip
import json
import random
import shutil
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest

from srscale.config import DataConfig, SuiteSizes
from srscale.data_sources import (
    Example,
    _apportion,
    balance_scores,
    build_oasst_eft,
    fill_judge_template,
    hh_prompt,
    load_seed_data,
    oasst_ranked_items,
    read_examples,
    scores_agree,
    split_hh_transcript,
)
from srscale.errors import SrscaleError
from srscale.seed_data import SPLITS, SeedData

TEMPLATE = "Judge.\nUser: {prompt}\n<response>{response}</response>\nEnd with Score: <n>"

ORCA = "orca_dpo_pairs/validation.orca_columns.jsonl"
ORCA_CHAT = "orca_dpo_pairs/validation.jsonl"
OASST = "oasst/en_100_tree.jsonl"
HH = "hh_rlhf/harmless-base/test.jsonl.gz"
ALPACA = "alpaca/alpaca_data.first200.json"
OASST2 = "oasst2_eft/oasst2_evaluation_fine_tuning.jsonl"


def cfg(source: str, *files: str | Path, **kw) -> DataConfig:
    return DataConfig(source=source, data_files=[str(f) for f in files] or None, **kw)


def load(source: str, *files, **kw) -> SeedData:
    return load_seed_data(cfg(source, *files, **kw), TEMPLATE)


def _str(x) -> bool:
    return isinstance(x, str) and x.strip() != ""


def check_contract(sd: SeedData) -> None:
    """Every row has exactly the fields of its split, with the documented types."""
    for r in sd.ift:
        assert set(r) == {"prompt", "response"} and _str(r["prompt"]) and _str(r["response"])
    for r in sd.eft:
        assert set(r) == {"prompt", "response", "score"} and isinstance(r["score"], int)
    for r in sd.seed_pairs:
        assert set(r) == {"prompt", "chosen", "rejected"} and r["chosen"] != r["rejected"]
        assert all(_str(r[k]) for k in r)
    for r in sd.eft_eval:
        assert set(r) == {"prompt", "responses", "gold"} and _str(r["prompt"])
        assert len(r["responses"]) == len(r["gold"]) >= 2 and all(_str(x) for x in r["responses"])
        assert all(isinstance(g, float) for g in r["gold"]) and len(set(r["gold"])) > 1
    for r in sd.heldout:
        assert set(r) == {"prompt", "family"} and _str(r["prompt"]) and r["family"] is None
    for r in sd.seed_prompts:
        assert set(r) == {"prompt"} and _str(r["prompt"])
    for r in sd.probe:
        assert set(r) == {"prompt", "response", "gold"} and _str(r["response"])
        assert r["gold"] is None or isinstance(r["gold"], float)
    assert sd.verifiable is False


def check_disjoint(sd: SeedData) -> None:
    """No eval prompt is trained on, and the eval splits share no prompt."""
    train = {r["prompt"] for split in (sd.ift, sd.seed_pairs, sd.seed_prompts, sd.eft) for r in split}
    evals = {name: {r["prompt"] for r in getattr(sd, name)} for name in ("eft_eval", "probe", "heldout")}
    for name, prompts in evals.items():
        assert not prompts & train, name
    assert not evals["eft_eval"] & evals["probe"]
    assert not evals["eft_eval"] & evals["heldout"]
    assert not evals["probe"] & evals["heldout"]


def eval_prompts(sd: SeedData) -> set[str]:
    return {r["prompt"] for name in ("eft_eval", "probe", "heldout") for r in getattr(sd, name)}


# ------------------------------------------------------------------------------- orca_dpo_pairs
def test_orca_pairs(shared_data):
    sd = load("orca_dpo_pairs", shared_data / ORCA)
    check_contract(sd)
    check_disjoint(sd)
    c = sd.counts()
    # 284 distinct prompts; 10% (28) held out and dealt in proportion to sizes 200 : 32 : 100.
    assert c["ift"] == c["seed_pairs"] == c["seed_prompts"] == 256
    assert c["eft"] == 0
    assert (c["eft_eval"], c["probe"] // 2, c["heldout"]) == (17, 3, 8)
    assert len(eval_prompts(sd)) == 28
    assert all(r["gold"] == [1.0, 0.0] for r in sd.eft_eval)
    assert [r["gold"] for r in sd.probe[:2]] == [1.0, 0.0]
    # The system message is kept ahead of the question; the IFT response is the chosen answer.
    first = json.loads((shared_data / ORCA).read_text().splitlines()[0])
    prompt = f"{first['system']}\n\n{first['question']}"
    rows = [r for r in sd.ift if r["prompt"] == prompt] + [
        {"prompt": r["prompt"], "response": r["responses"][0]} for r in sd.eft_eval if r["prompt"] == prompt
    ] + [r for r in sd.probe if r["prompt"] == prompt and r["gold"] == 1.0]
    assert rows and rows[0]["response"] == first["chosen"].strip()


def test_orca_chat_format_matches_column_format(shared_data):
    assert load("orca_dpo_pairs", shared_data / ORCA_CHAT) == load("orca_dpo_pairs", shared_data / ORCA)


def test_splits_deterministic_and_seeded(shared_data):
    a = load("orca_dpo_pairs", shared_data / ORCA, seed=7)
    assert a == load("orca_dpo_pairs", shared_data / ORCA, seed=7)
    b = load("orca_dpo_pairs", shared_data / ORCA, seed=8)
    assert eval_prompts(a) != eval_prompts(b)
    assert a.counts() == b.counts()


def test_max_examples_and_eval_fraction(shared_data):
    sd = load("orca_dpo_pairs", shared_data / ORCA, max_examples=50, eval_fraction=0.2)
    check_disjoint(sd)
    assert len(sd.seed_prompts) + len(eval_prompts(sd)) == 50
    assert len(eval_prompts(sd)) == 10
    # When the sizes ask for fewer eval prompts than eval_fraction allows, the rest train.
    small = SuiteSizes(eft_eval=3, heldout=2, probe=4)
    sd = load("orca_dpo_pairs", shared_data / ORCA, sizes=small)
    assert (len(sd.eft_eval), len(sd.heldout), len(sd.probe)) == (3, 2, 4)
    assert len(sd.ift) == 284 - 3 - 2 - 2


# ------------------------------------------------------------------------------------- oasst
def _flatten_tree(tree: dict) -> list[dict]:
    """The oasst1 message-table rows (the hub's format) of one tree-export row."""
    out, stack = [], [tree["prompt"]]
    while stack:
        msg = stack.pop()
        stack.extend(msg.get("replies") or [])
        out.append({**{k: v for k, v in msg.items() if k != "replies"},
                    "message_tree_id": tree["message_tree_id"]})
    return out


def test_oasst_tree_export(shared_data):
    sd = load("oasst", shared_data / OASST)
    check_contract(sd)
    check_disjoint(sd)
    trees = [json.loads(line) for line in (shared_data / OASST).read_text().splitlines()]
    human = [t["prompt"] for t in trees if not t["prompt"].get("synthetic")]
    assert len(human) == 95
    prompts = {r["prompt"] for r in sd.seed_prompts} | eval_prompts(sd)
    assert prompts == {t["text"].strip() for t in human}  # synthetic (chip20b) prompts are dropped
    assert len(sd.ift) >= 80 and sd.eft == []
    # IFT is the rank-0 reply of that prompt.
    rank0 = {t["text"].strip(): next(r["text"].strip() for r in t["replies"] if r.get("rank") == 0)
             for t in human if any(r.get("rank") == 0 for r in t["replies"])}
    assert all(rank0[r["prompt"]] == r["response"] for r in sd.ift)
    # gold is human rank turned so higher is better: n-1 for the best reply down to 0.
    for r in sd.eft_eval:
        n = len(r["responses"])
        assert r["gold"] == [float(n - 1 - i) for i in range(n)]
        assert r["responses"][0] == rank0.get(r["prompt"], r["responses"][0])
    assert sd.eft_eval and sd.probe and sd.heldout


def test_oasst_message_table_matches_tree_export(shared_data, tmp_path):
    trees = [json.loads(line) for line in (shared_data / OASST).read_text().splitlines()]
    flat = tmp_path / "oasst1_messages.jsonl"
    flat.write_text("".join(json.dumps(m) + "\n" for t in trees for m in _flatten_tree(t)))
    assert load("oasst", flat) == load("oasst", shared_data / OASST)


def test_oasst_ranked_items_are_training_prompts(shared_data):
    c = cfg("oasst", shared_data / OASST)
    items = oasst_ranked_items(c)
    sd = load_seed_data(c, TEMPLATE)
    assert len(items) > 70
    assert {i["prompt"] for i in items} <= {r["prompt"] for r in sd.seed_prompts}
    assert not {i["prompt"] for i in items} & eval_prompts(sd)
    for i in items:
        assert len(i["replies"]) == len(i["ranks"]) >= 2 and i["ranks"] == sorted(i["ranks"])
    assert len(oasst_ranked_items(c, limit=5)) == 5
    with pytest.raises(SrscaleError, match="needs data.source=oasst"):
        oasst_ranked_items(cfg("alpaca", shared_data / ALPACA))


# ----------------------------------------------------------------------------------- hh_rlhf
def test_hh_transcript_split():
    t = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you?\n\nAssistant: fine, thanks"
    prefix, final = split_hh_transcript(t)
    assert final == "fine, thanks"
    assert hh_prompt(prefix) == ("Human: hi\n\nAssistant: hello\n\nHuman: how are you?", False)
    assert hh_prompt(split_hh_transcript("\n\nHuman: 2+2?\n\nAssistant: 4")[0]) == ("2+2?", True)


def test_hh_rlhf(shared_data):
    sd = load("hh_rlhf", shared_data / HH)
    check_contract(sd)
    check_disjoint(sd)
    with gzip.open(shared_data / HH, "rt") as fh:
        n_rows = sum(1 for _ in fh)
    assert n_rows == 2312
    n = len(sd.ift) + sum(len(r["responses"]) // 2 for r in sd.eft_eval) + len(sd.probe) // 2 + len(sd.heldout)
    assert 2290 <= n <= 2312  # a few rows with diverging prefixes or an empty final reply are skipped
    assert len(sd.seed_pairs) == len(sd.ift)
    for r in sd.seed_pairs:
        assert "\n\nHuman:" not in r["chosen"] and "\n\nAssistant:" not in r["rejected"]
        assert not r["prompt"].startswith("\n")
    # Single-turn prompts are plain text; only those seed self-instruct.
    assert all("Human:" not in r["prompt"] for r in sd.seed_prompts)
    assert 500 < len(sd.seed_prompts) < 662
    assert any(r["prompt"].startswith("Human: ") for r in sd.ift)  # multi-turn keeps its context


# ------------------------------------------------------------------------------------ alpaca
def test_alpaca(shared_data):
    sd = load("alpaca", shared_data / ALPACA)
    check_contract(sd)
    check_disjoint(sd)
    rows = json.loads((shared_data / ALPACA).read_text())
    assert len(sd.ift) == len(sd.seed_prompts) == 180
    assert len(sd.probe) + len(sd.heldout) == 20
    assert sd.seed_pairs == [] and sd.eft_eval == [] and sd.eft == []
    assert all(r["gold"] is None for r in sd.probe)
    with_input = next(r for r in rows if r["input"])
    prompts = {r["prompt"] for r in sd.ift} | eval_prompts(sd)
    assert f"{with_input['instruction']}\n\n{with_input['input']}" in prompts


# ------------------------------------------------------------------------------ generic files
def test_generic_jsonl_with_column_mapping(shared_data):
    sd = load("jsonl", shared_data / OASST2, columns={"prompt": "prompt_text", "response": "response_text"})
    check_contract(sd)
    check_disjoint(sd)
    assert len(sd.seed_prompts) + len(eval_prompts(sd)) == 799  # distinct prompts; 2,844 rows
    assert len(sd.ift) > 2500  # every training row is an IFT example
    assert sd.seed_pairs == [] and sd.eft_eval == []


def test_generic_parquet_and_csv_with_pairs(shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / ORCA).read_text().splitlines()[:40]]
    ds = datasets.Dataset.from_list([{"q": r["question"], "sys": r["system"], "good": r["chosen"],
                                      "bad": r["rejected"]} for r in rows])
    columns = {"prompt": "q", "system": "sys", "chosen": "good", "rejected": "bad"}
    ds.to_parquet(tmp_path / "pairs.parquet")
    ds.to_csv(tmp_path / "pairs.csv", index=False)
    a = load("jsonl", tmp_path / "pairs.parquet", columns=columns)
    b = load("jsonl", tmp_path / "pairs.csv", columns=columns)
    check_contract(a)
    assert a == b
    # Same content as the orca source reading the same 40 rows.
    assert a == load("orca_dpo_pairs", shared_data / ORCA, max_examples=40)


def test_generic_unknown_column_names_actual_columns(shared_data):
    with pytest.raises(SrscaleError) as err:
        load("jsonl", shared_data / OASST2, columns={"prompt": "instruction", "response": "response_text"})
    msg = str(err.value)
    assert "\n" not in msg and "prompt->instruction" in msg
    assert "prompt_text" in msg and "response_text" in msg and "quality_score" in msg
    with pytest.raises(SrscaleError, match="unknown key.*answer"):
        load("jsonl", shared_data / OASST2, columns={"prompt": "prompt_text", "answer": "response_text"})
    with pytest.raises(SrscaleError, match="must map prompt and response"):
        load("jsonl", shared_data / OASST2)  # no mapping and no column called prompt


# ------------------------------------------------------------------------------------ errors
def test_missing_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(SrscaleError) as err:
        load("orca_dpo_pairs", missing)
    assert str(err.value) == f"data=orca_dpo_pairs: data file not found: {missing}"


def test_wrong_schema_names_missing_columns(shared_data):
    with pytest.raises(SrscaleError) as err:
        load("orca_dpo_pairs", shared_data / ALPACA)
    msg = str(err.value)
    assert "\n" not in msg
    assert "lacks column(s) question, chosen, rejected" in msg and "has: instruction, input, output" in msg
    with pytest.raises(SrscaleError, match="lacks column.*instruction"):
        load("alpaca", shared_data / HH)


def test_unreadable_file_and_bad_template(tmp_path, shared_data):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "a", "rejected": \n not json\n')
    with pytest.raises(SrscaleError) as err:
        load("hh_rlhf", bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(SrscaleError, match=r"lacks the slot\(s\) \{response\}"):
        load_seed_data(cfg("alpaca", shared_data / ALPACA), "User: {prompt}")


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """A hub endpoint that refuses connections at once, and an empty datasets cache."""
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path / "cache"


@pytest.mark.parametrize("flag", [False, True], ids=["network-down", "HF_HUB_OFFLINE"])
def test_hub_offline_error_is_one_line_and_fast(unreachable_hub, monkeypatch, flag):
    if flag:
        monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(SrscaleError) as err:
        load_seed_data(DataConfig(source="orca_dpo_pairs"), TEMPLATE)
    assert time.monotonic() - start < 5
    assert str(err.value) == (
        "data=orca_dpo_pairs: cannot load hub dataset 'Intel/orca_dpo_pairs' split 'train' (offline and "
        "not cached); download it, or pass data.data_files=[/path/to/file.jsonl] with columns system, "
        "question, chosen, rejected")
    # The offline switch is scoped to the call.
    assert datasets.config.HF_HUB_OFFLINE is flag and huggingface_hub.constants.HF_HUB_OFFLINE is flag


def test_hub_unreachable_serves_cached_copy(unreachable_hub, shared_data):
    """With no network, a dataset already in the datasets cache still loads (as HF_HUB_OFFLINE=1 does)."""
    scratch = unreachable_hub.parent / "scratch"
    datasets.load_dataset("json", data_files=[str(shared_data / ORCA)], split="train", cache_dir=str(scratch))
    # Lay it out as load_dataset("srscale-test/tiny_orca") caches a hub dataset: <org>___<name>/default/...
    root = unreachable_hub / "srscale-test___tiny_orca" / "default"
    shutil.copytree(next((scratch / "json").iterdir()), root)
    for arrow in root.rglob("json-train.arrow"):
        arrow.rename(arrow.with_name("tiny_orca-train.arrow"))
    for info in root.rglob("dataset_info.json"):
        info.write_text(json.dumps({**json.loads(info.read_text()), "config_name": "default"}))
    sd = load_seed_data(DataConfig(source="orca_dpo_pairs", hub_id="srscale-test/tiny_orca"), TEMPLATE)
    assert sd == load("orca_dpo_pairs", shared_data / ORCA)


# ------------------------------------------------------------------------------ oasst EFT core
def test_fill_judge_template_is_one_pass():
    out = fill_judge_template("U: {prompt} R: {response}", "say {response}", "ok {prompt}")
    assert out == "U: say {response} R: ok {prompt}"


def test_scores_agree():
    assert scores_agree([0, 1, 2], [5, 4, 2])
    assert scores_agree([0, 1, 2], [5, 5, 2])  # ties allowed by default
    assert not scores_agree([0, 1, 2], [5, 5, 2], allow_ties=False)
    assert not scores_agree([0, 1, 2], [4, 5, 2])  # disagreeing order
    assert not scores_agree([0, 1], [3, 3])  # a flat scoring says nothing about the ranking
    assert scores_agree([2, 0, 1], [1, 5, 3])  # replies need not come sorted


def _judged(*scores):
    return [{"text": f"Looks fine.\nScore: {s}", "score": s} for s in scores]


def test_build_oasst_eft_filters():
    items = [
        {"prompt": "agree", "replies": ["a0", "a1", "a2"], "ranks": [0, 1, 2]},
        ("disagree", ["b0", "b1"], [0, 1]),
        {"prompt": "unparsed", "replies": ["c0", "c1"], "ranks": [0, 1]},
        {"prompt": "flat", "replies": ["d0", "d1"], "ranks": [0, 1]},
        {"prompt": "float-int", "replies": ["e0", "e1"], "ranks": [1, 0]},
    ]
    judgments = [
        _judged(5, 3, 0),
        [("Score: 2", 2), ("Score: 4", 4)],
        [{"text": "Score: 4", "score": 4}, {"text": "garbled", "score": None}],
        _judged(3, 3),
        [{"text": "Score: 1", "score": 1.0}, {"text": "Score: 2", "score": 2.0}],
    ]
    rows = build_oasst_eft(items, judgments, TEMPLATE, rng=0)
    assert [r["prompt"] for r in rows] == [fill_judge_template(TEMPLATE, p, r) for p, r in
                                           [("agree", "a0"), ("agree", "a1"), ("agree", "a2"),
                                            ("float-int", "e0"), ("float-int", "e1")]]
    assert [r["score"] for r in rows] == [5, 3, 0, 1, 2]  # distinct: balancing keeps all
    assert all(type(r["score"]) is int for r in rows)
    assert rows[0]["response"] == "Looks fine.\nScore: 5"
    assert set(rows[0]) == {"prompt", "response", "score"}
    # A non-integral score is not a score either; nor is True.
    assert build_oasst_eft([("p", ["x", "y"], [0, 1])], [[("s", 3.5), ("s", 1)]], TEMPLATE, 0) == []
    assert build_oasst_eft([("p", ["x", "y"], [0, 1])], [[("s", True), ("s", 0)]], TEMPLATE, 0) == []
    with pytest.raises(ValueError):
        build_oasst_eft([("p", ["x", "y"], [0, 1])], [[("s", 3)]], TEMPLATE, 0)


def test_build_oasst_eft_balances_scores():
    rng = random.Random(0)
    items, judgments = [], []
    for i in range(60):  # score 4 floods: 60 prompts judged (4, 2), 10 judged (5, 3), 5 judged (3, 1)
        items.append((f"p{i}", [f"good{i}", f"bad{i}"], [0, 1]))
        judgments.append(_judged(4, 2) if i < 45 else _judged(5, 3) if i < 55 else _judged(3, 1))
    rows = build_oasst_eft(items, judgments, TEMPLATE, rng)
    counts = {s: sum(r["score"] == s for r in rows) for s in {r["score"] for r in rows}}
    # before: 4:45, 2:45, 5:10, 3:15, 1:5 -> the top value (one of the two 45s) is not above the next
    assert max(counts.values()) == sorted(counts.values())[-2]
    assert rows == build_oasst_eft(items, judgments, TEMPLATE, random.Random(0))  # seeded
    flood = [{"score": 4}] * 50 + [{"score": 2}] * 7 + [{"score": 5}] * 3
    kept = balance_scores(flood, random.Random(1))
    assert [sum(r["score"] == s for r in kept) for s in (4, 2, 5)] == [7, 7, 3]
    assert balance_scores([{"score": 3}] * 4, random.Random(1)) == [{"score": 3}] * 4


# ----------------------------------------------------------------------------------- helpers
def test_apportion():
    assert _apportion(10, {"a": 2, "b": 3}) == {"a": 2, "b": 3}
    got = _apportion(28, {"e": 200, "p": 32, "h": 100})
    assert sum(got.values()) == 28 and got == {"e": 17, "p": 3, "h": 8}
    assert _apportion(3, {"e": 1000, "p": 1, "h": 1}) == {"e": 1, "p": 1, "h": 1}
    assert _apportion(0, {"e": 5}) == {"e": 0}


def test_read_examples_caps_after_filtering(shared_data):
    ex = read_examples(cfg("oasst", shared_data / OASST, max_examples=10))
    assert len(ex) == 10 and all(isinstance(e, Example) for e in ex)


def test_every_split_saved(tmp_path, shared_data):
    sd = load("hh_rlhf", shared_data / HH, max_examples=100)
    sd.save(tmp_path / "seed")
    assert SeedData.load(tmp_path / "seed") == sd
    assert {p.stem for p in (tmp_path / "seed").glob("*.jsonl")} == set(SPLITS)
