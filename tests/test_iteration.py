"""One self-rewarding iteration's sub-stages with scripted samplers: records per sub-stage, the gate
tripping inside an iteration, and resume of a sub-stage whose outputs were damaged."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import ScriptedEngine, ScriptedSampler
from srscale import pipeline
from srscale.stagebook import Job
from srscale.suite.build import build_suite
from srscale.tinymodel import train_tokenizer
from srscale.tracking import NullTracker
from test_config import compose_cfg


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["What is 2 + 3? The answer is 5. Score: 4"] * 40, vocab_size=350)


def _ctx(tmp_path: Path, tokenizer, judge_reply, overrides=()):
    cfg = compose_cfg(["self_reward.prompts_per_iteration=6", "self_reward.candidates=2", "judge.samples=2",
                       *overrides])
    data = build_suite({"ift": 4, "eft": 4, "seed_pairs": 2, "eft_eval": 2, "heldout": 2, "seed_prompts": 12,
                        "probe": 4}, seed=0, judge_template=cfg.judge.template)
    policy = ScriptedSampler(tokenizer, lambda text, i, j: f"The answer is {i + j}.")
    judge_calls = []

    def reply(text, i, j):
        judge_calls.append(i)
        return judge_reply(text, i, j)

    # The same model writes and judges: candidates first, then judgments (told apart by the prompt).
    def either(text, i, j):
        return reply(text, i, j) if "Score: <total points>" in text else policy.reply(text, i, j)

    engine = ScriptedEngine({None: ScriptedSampler(tokenizer, either)})
    job = Job(cfg, tmp_path, NullTracker())
    job.records["data"] = {"uid": "data"}
    ctx = pipeline.Ctx(job=job, data=data, models=SimpleNamespace(tokenizer=lambda: tokenizer), engine=engine,
                       n_params=1000)
    return ctx, judge_calls


def test_the_gate_can_trip_inside_an_iteration(tmp_path: Path, tokenizer) -> None:
    ctx, judge_calls = _ctx(tmp_path, tokenizer, lambda text, i, j: "I cannot say.")
    rec = pipeline.stage_iteration(ctx, None, 1)
    assert rec["tripped"] and rec["gate"]["tripped_at"] == 11 and rec["gate"]["total"] == 11
    d = tmp_path / "iter_1"
    judged = [json.loads(line) for line in (d / "judging" / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 11 and all(j["score"] is None for j in judged)
    assert not (d / "pairs").exists() and not (d / "dpo").exists()  # no pairs, no DPO after a trip
    summary = pipeline.disqualify(ctx, rec, stage="iter_1")
    assert summary["gate_outcome"] == "disqualified" and summary["gate_stage"] == "iter_1"
    assert rec["failing_file"] == "iter_1/judging/failing_judgments.jsonl" and (tmp_path / rec["failing_file"]).exists()
    assert rec["metrics"]["parse_failure_rate"] == 1.0 and rec["metrics"]["candidates"] == 12


def test_a_damaged_sub_stage_is_redone_and_the_stages_after_it_too(tmp_path: Path, tokenizer, monkeypatch) -> None:
    ctx, judge_calls = _ctx(tmp_path, tokenizer, lambda text, i, j: f"Fine. Score: {(i + j) % 6}")
    trained = []

    def fake_dpo(ctx, d, policy_dir, t, inputs):
        rec = pipeline.stage_record(d, inputs)
        if rec is None:
            trained.append(t)
            rec = pipeline.mark_done(d, {"metrics": {"dpo_steps": 1}, "cost": {}, "model_dir": None}, inputs=inputs)
        return rec

    monkeypatch.setattr(pipeline, "stage_dpo", fake_dpo)
    first = pipeline.stage_iteration(ctx, None, 1)
    assert not first["tripped"] and first["metrics"]["valid_pairs"] > 0 and trained == [1]
    n_judged = len(judge_calls)
    judgments = tmp_path / "iter_1" / "judging" / "judgments.jsonl"
    lines = judgments.read_text().splitlines()
    judgments.write_text("\n".join(lines[:5]) + "\n")  # a kill or a bad copy left 5 of 24 lines
    (tmp_path / "iter_1" / "DONE.json").unlink()
    ctx.job.records.clear()
    ctx.job.records["data"] = {"uid": "data"}
    again = pipeline.stage_iteration(ctx, None, 1)
    assert len(judgments.read_text().splitlines()) == len(lines)  # judged again, completely
    assert len(judge_calls) == 2 * n_judged and trained == [1, 1]  # pairs and DPO were redone after it
    assert again["metrics"]["valid_pairs"] == first["metrics"]["valid_pairs"]
