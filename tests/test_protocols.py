"""The two reference protocols and the offline evaluation suite, end to end on a very small model.

- ``experiment=cs224n`` on real seed data (the Intel/orca_dpo_pairs subset in ../shared/data):
  seed-pair DPO before self-rewarding, SFT and seed-DPO baselines evaluated in the same job.
- ``experiment=paper`` with ``eval=full_local``: self-instruct prompts, the full judge prompt, and every
  offline evaluation (reward model, task accuracy, lm-eval on local files, MT-Bench with a local judge,
  head-to-head) logged per stage.
The gate threshold is raised so this small model's loop runs; the gate itself is tested elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import NO_GATE, SMALL, run_cli, store
from srscale.tracking import find_runs, metric_history

pytestmark = pytest.mark.slow


def test_orca_offline_without_files_fails_with_one_line(tmp_path: Path, env: dict) -> None:
    out = run_cli(["model=tinyllama", "data=orca_dpo_pairs", "tracking=none"], tmp_path, env, timeout=120)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "Intel/orca_dpo_pairs" in lines[0] and "data.data_files" in lines[0], out.stderr


def test_cs224n_protocol_on_orca_pairs(tmp_path: Path, env: dict, shared_data: Path) -> None:
    orca = shared_data / "orca_dpo_pairs" / "validation.orca_columns.jsonl"
    args = [*SMALL, *NO_GATE, "experiment=cs224n", "data=orca_dpo_pairs", f"data.data_files=[{orca}]",
            "data.max_examples=60", "model.max_length=256", "train.sft.max_steps=6", "train.seed_dpo_epochs=1",
            "train.dpo.epochs=1", "self_reward.iterations=2", "self_reward.max_new_tokens=12", "judge.max_new_tokens=400",
            "eval.max_items=4"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert (jobdir / "seed_dpo" / "DONE.json").exists()
    assert {p.name for p in (jobdir / "eval").iterdir()} == {"sft", "seed_dpo", "iter_1", "iter_2"}
    prompts = [json.loads(line)["source"]
               for line in (jobdir / "iter_1" / "prompts" / "prompts.jsonl").read_text().splitlines()]
    assert prompts and set(prompts) == {"seed_pool"}
    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["lora.name"] == "r16" and p["train.dpo.learning_rate"] == "5e-05" and p["self_reward.max_pairs"] == "20"
    assert p["judge.name"] == "short" and p["data.source"] == "orca_dpo_pairs"
    assert metric_history(store(tmp_path), run.info.run_id, "seed_dpo/loss")
    assert [s for s, _ in metric_history(store(tmp_path), run.info.run_id, "iter/valid_pairs")] == [1, 2]


def test_paper_protocol_with_every_offline_evaluation(tmp_path: Path, env: dict, shared_data: Path) -> None:
    args = [*SMALL, *NO_GATE, "experiment=paper", "eval=full_local", f"eval.data_root={shared_data}",
            "train.sft.logging_steps=2", "self_reward.iterations=1", "self_reward.candidates=2",
            "judge.samples=2", "judge.max_new_tokens=400", "self_reward.max_new_tokens=12",
            "self_reward.instruct_max_new_tokens=24", "eval.lm_eval.limit=2", "eval.lm_eval.tasks=[arc_easy,piqa,siqa]",
            "eval.mtbench.max_questions=2", "eval.mtbench.max_new_tokens=8", "eval.mtbench.judge_max_tokens=8",
            "eval.head_to_head.max_prompts=3", "eval.head_to_head.max_new_tokens=8", "eval.max_items=4"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    counts = json.loads((jobdir / "iter_1" / "prompts" / "DONE.json").read_text())["metrics"]
    assert counts["prompts_generated"] >= counts["prompts_kept"] and "prompts_filtered_too_short" in counts
    for stage in ("sft", "iter_1"):
        rec = json.loads((jobdir / "eval" / stage / "DONE.json").read_text())
        assert rec["errors"] == {}, rec["errors"]
        assert (jobdir / "eval" / stage / "lm_eval_results.json").exists()
        assert list((jobdir / "eval" / stage / "mt_bench" / "model_answer").glob("*.jsonl"))
        assert list((jobdir / "eval" / stage / "mt_bench" / "model_judgment").glob("*_single.jsonl"))
    (run,) = find_runs(store(tmp_path), "srscale")
    rid, uri = run.info.run_id, store(tmp_path)
    assert run.data.params["judge.name"] == "paper" and run.data.params["self_reward.prompt_source"] == "self_instruct"
    for key in ("eval/lm_eval/arc_easy/acc", "eval/lm_eval/piqa/acc", "eval/lm_eval/siqa/acc",
                "eval/rm/parse_rate", "eval/mtbench/scored", "eval/mtbench/missing", "eval/h2h/alpaca_eval/n"):
        assert [s for s, _ in metric_history(uri, rid, key)] == [0, 1], key
    assert [s for s, _ in metric_history(uri, rid, "eval/h2h/vs_sft/n")] == [1]


def test_oasst_builds_eft_from_the_sft_models_own_judgments(tmp_path: Path, env: dict, shared_data: Path) -> None:
    trees = shared_data / "oasst" / "en_100_tree.jsonl"
    args = [*SMALL, *NO_GATE, "data=oasst", f"data.data_files=[{trees}]", "data.max_examples=30",
            "data.sizes.probe=2", "data.sizes.heldout=2", "data.eval_fraction=0.3",  # >= 3 judge items of 30
            "model.max_length=256", "train.sft.max_steps=4", "self_reward.iterations=1", "eval.max_items=3",
            "tracking.log_models=false"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    rec = json.loads((jobdir / "oasst_eft" / "DONE.json").read_text())
    assert rec["prompts"] > 0 and rec["judged"] >= 2 * rec["prompts"]
    assert (jobdir / "oasst_eft" / "sft_ift" / "model").is_dir()
    sft = json.loads((jobdir / "sft" / "DONE.json").read_text())
    assert sft["examples"] == len((jobdir / "data" / "ift.jsonl").read_text().splitlines()) + rec["eft_rows"]
    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED" and run.data.metrics["oasst_eft/eft_rows"] == rec["eft_rows"]
    # The held-out judge set was judged: every response of the 3 items, with a real parse rate.
    sft_eval = json.loads((jobdir / "eval" / "sft" / "DONE.json").read_text())["metrics"]
    assert sft_eval["rm/n_items"] == 3 and sft_eval["rm/n_responses"] >= 6
    assert 0.0 <= sft_eval["rm/parse_rate"] <= 1.0 and run.data.metrics["eval/rm/n_items"] == 3


def test_a_failing_evaluation_keeps_the_others(tmp_path: Path, env: dict, shared_data: Path) -> None:
    # A missing judge key fails the job before it starts (tests/test_preflight.py); a file that is
    # missing when the evaluation runs fails only that evaluation.
    missing = tmp_path / "missing_questions.jsonl"
    args = [*SMALL, *NO_GATE, "self_reward.iterations=0", f"eval.data_root={shared_data}", "eval.max_items=3",
            "eval.mtbench.enabled=true", "eval.mtbench.judge=local", f"eval.mtbench.question_file={missing}",
            "eval.mtbench.max_questions=1", "eval.mtbench.max_new_tokens=4", "tracking.log_models=false"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    rec = json.loads((jobdir / "eval" / "sft" / "DONE.json").read_text())
    assert list(rec["errors"]) == ["mtbench"] and str(missing) in rec["errors"]["mtbench"]
    assert "\n" not in rec["errors"]["mtbench"]
    assert "rm/parse_rate" in rec["metrics"] and "task/accuracy" in rec["metrics"]
    (run,) = find_runs(store(tmp_path), "srscale")
    assert str(missing) in run.data.tags["eval_error.mtbench.sft"]
