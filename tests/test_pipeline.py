"""End-to-end jobs through the real CLI (Hydra, TRL, MLflow sqlite) on a very small built-in model.

The model here is far too small and briefly trained to judge; the wiring tests therefore raise the
gate's threshold so the loop runs, and the gate test uses the untrained base model with the default
threshold. Whether the default tiny model passes the default gate is measured by the default run
(README, "The default model").
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import mlflow
import pytest

from conftest import JUDGES, NO_GATE, SMALL, merged, run_cli, store
from srscale.tracking import find_runs, metric_history

pytestmark = pytest.mark.slow

def test_loop_runs_two_iterations_and_records_everything(tmp_path: Path, env: dict) -> None:
    # With seed-pair DPO before the loop and DPO's reference fixed at M1: M1 must be the SFT model
    # itself (not the seed-DPO model the iterations start from), and the sft evaluation evaluates it.
    args = merged(SMALL, JUDGES, NO_GATE, ["self_reward.iterations=2", "train.seed_dpo_epochs=1",
                                           "train.dpo.reference=m1"])
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    job = tmp_path / "outputs"
    (jobdir,) = [p for p in job.iterdir() if p.is_dir()]
    summary = json.loads((jobdir / "summary.json").read_text())
    assert summary["gate_outcome"] == "passed" and summary["iterations_completed"] == 2

    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["model.name"] == "tiny_300k" and params["self_reward.iterations"] == "2"
    for tag in ("model_id", "model_params", "torch_version", "transformers_version", "trl_version",
                "peft_version", "git_commit", "hydra_overrides"):
        assert tag in tags, tag
    assert "self_reward.iterations=2" in tags["hydra_overrides"]
    assert int(tags["model_params"]) > 100_000

    rid = run.info.run_id
    loss = metric_history(store(tmp_path), rid, "sft/loss")
    assert len(loss) >= 2 and loss[-1][1] < loss[0][1]
    for key in ("iter/prompts_kept", "iter/candidates", "iter/judge_samples", "iter/parse_failure_rate",
                "iter/longest_failure_streak", "iter/valid_pairs", "iter/ties_dropped"):
        assert [s for s, _ in metric_history(store(tmp_path), rid, key)] == [1, 2], key
    candidates = dict(metric_history(store(tmp_path), rid, "iter/candidates"))
    kept = dict(metric_history(store(tmp_path), rid, "iter/prompts_kept"))
    assert candidates[1] == 2 * kept[1]
    assert [s for s, _ in metric_history(store(tmp_path), rid, "eval/task/accuracy")] == [0, 1, 2]

    client = mlflow.MlflowClient(tracking_uri=store(tmp_path))
    top = {a.path for a in client.list_artifacts(rid)}
    assert {"config", "sft_model", "seed_data_sample", "iterations", "eval"} <= top
    it1 = {Path(a.path).name for a in client.list_artifacts(rid, "iterations/iter_1")}
    assert {"prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl", "score_histogram.json"} <= it1
    judgments = [json.loads(line) for line in (jobdir / "iter_1" / "judging" / "judgments.jsonl").read_text().splitlines()]
    assert judgments and all(j["score"] is None or 0 <= j["score"] <= 5 for j in judgments)

    # The model judged its own candidates, so pairs formed and DPO trained M2 (and M3 from M2).
    it1, it2 = (json.loads((jobdir / f"iter_{t}" / "DONE.json").read_text()) for t in (1, 2))
    dpo1 = json.loads((jobdir / "iter_1" / "dpo" / "DONE.json").read_text())
    assert dpo1["reference"] == "sft/model"  # reference=m1 is M1, the SFT model
    # The policy started from the seed-DPO model, so it already differs from its reference (loss != log 2).
    assert dpo1["record"]["loss_curve"][0][1] != pytest.approx(0.6931, abs=2e-4)
    assert json.loads((jobdir / "eval" / "sft" / "DONE.json").read_text())["model"] == "sft/model"
    assert json.loads((jobdir / "summary.json").read_text())["cost"]["flops"] > 0
    assert it1["metrics"]["valid_pairs"] > 0 and it1["metrics"]["dpo_steps"] > 0
    assert it1["model_dir"] == "iter_1/dpo/model" and (jobdir / "iter_1/dpo/model").is_dir()  # job-relative
    assert [s for s, _ in metric_history(store(tmp_path), rid, "iter/dpo_loss")] == (
        [1, 2] if it2["metrics"].get("dpo_steps") else [1])
    pairs = [json.loads(line) for line in (jobdir / "iter_1" / "pairs" / "pairs.jsonl").read_text().splitlines()]
    assert all(p["chosen_score"] > p["rejected_score"] for p in pairs)

    # A finished job is not redone.
    again = run_cli(args, tmp_path, env)
    assert again.returncode == 0 and len(find_runs(store(tmp_path), "srscale")) == 1
    assert len(metric_history(store(tmp_path), rid, "iter/candidates")) == 2


def test_model_that_cannot_judge_is_disqualified_at_the_11th_failure(tmp_path: Path, env: dict) -> None:
    out = run_cli([*SMALL, "train.sft.enabled=false"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    probe = json.loads((jobdir / "probe" / "DONE.json").read_text())
    assert probe["tripped"] and probe["gate"]["total"] == 11 and probe["gate"]["failures"] == 11
    assert not list(jobdir.glob("iter_*")) and not (jobdir / "sft").exists()
    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED"
    assert run.data.tags["gate_outcome"] == "disqualified" and run.data.tags["gate_stage"] == "probe"
    assert run.data.tags["gate_longest_streak"] == "11"
    assert not [k for k in run.data.metrics if k.startswith(("dpo", "iter/"))]
    client = mlflow.MlflowClient(tracking_uri=store(tmp_path))
    assert "gate/failing_judgments.jsonl" in [a.path for a in client.list_artifacts(run.info.run_id, "gate")]
    failing = [json.loads(line) for line in (jobdir / "probe" / "failing_judgments.jsonl").read_text().splitlines()]
    assert len(failing) == 11 and all(f["score"] is None for f in failing)


def test_killed_job_resumes_at_the_stage_it_was_in(tmp_path: Path, env: dict) -> None:
    # The job SIGKILLs itself as iteration 2 starts (srscale.stagebook's fault-injection switch), as a
    # preempted job would die: deterministic, where polling for iter_2/ raced the job on a fast machine.
    args = [*SMALL, *NO_GATE, "self_reward.iterations=3", "eval=none", "tracking.log_models=false"]
    killed = run_cli(args, tmp_path, {**env, "SRSCALE_KILL_AT_STAGE": "iter_2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert (jobdir / "iter_2").is_dir()
    assert (jobdir / "iter_1" / "DONE.json").exists() and not (jobdir / "iter_2" / "DONE.json").exists()
    assert json.loads((jobdir / "job_state.json").read_text())["stage"] == "iter_2"
    stamp = (jobdir / "iter_1" / "DONE.json").stat().st_mtime
    sft_stamp = (jobdir / "sft" / "DONE.json").stat().st_mtime

    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (jobdir / "iter_1" / "DONE.json").stat().st_mtime == stamp  # not redone
    assert (jobdir / "sft" / "DONE.json").stat().st_mtime == sft_stamp
    assert json.loads((jobdir / "summary.json").read_text())["iterations_completed"] == 3
    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED"
    steps = [s for s, _ in metric_history(store(tmp_path), run.info.run_id, "iter/candidates")]
    assert steps == [1, 2, 3]
    sft_steps = [s for s, _ in metric_history(store(tmp_path), run.info.run_id, "sft/loss")]
    assert len(sft_steps) == len(set(sft_steps))


def test_multirun_runs_every_job_and_records_the_failing_ones(tmp_path: Path, env: dict) -> None:
    # 2 x 2 jobs: the two jsonl jobs fail (no data files given), the two suite jobs still run.
    out = run_cli(["-m", *SMALL, *NO_GATE, "self_reward.iterations=0", "eval=none", "lora=full,r8",
                   "data=suite,jsonl"], tmp_path, env)
    assert out.returncode == 2, out.stderr[-3000:]
    failed = [line for line in out.stderr.splitlines() if line.startswith("srscale: job failed:")]
    assert len(failed) == 2 and all("data=jsonl" in line and "data.data_files" in line for line in failed)
    assert "Traceback" not in out.stderr
    runs = find_runs(store(tmp_path), "srscale")
    assert len(runs) == 4
    by_status = {(r.data.params["data.name"], r.data.params["lora.name"]): r.info.status for r in runs}
    assert by_status == {("suite", "full"): "FINISHED", ("suite", "r8"): "FINISHED",
                         ("jsonl", "full"): "FAILED", ("jsonl", "r8"): "FAILED"}
    client = mlflow.MlflowClient(tracking_uri=store(tmp_path))
    failed_run = next(r for r in runs if r.info.status == "FAILED")
    assert "traceback.txt" in {a.path for a in client.list_artifacts(failed_run.info.run_id)}
    assert len({p.name for p in (tmp_path / "outputs").iterdir() if p.is_dir()}) == 4


def test_same_config_and_seed_give_the_same_generated_data(tmp_path: Path, env: dict) -> None:
    args = [*SMALL, *NO_GATE, "self_reward.iterations=1", "eval=none", "tracking=none"]
    dirs = []
    for name in ("a", "b"):
        cwd = tmp_path / name
        cwd.mkdir()
        out = run_cli(args, cwd, env)
        assert out.returncode == 0, out.stderr[-3000:]
        (jobdir,) = [p for p in (cwd / "outputs").iterdir() if p.is_dir()]
        dirs.append(jobdir)
    for rel in ("data/eft.jsonl", "iter_1/prompts/prompts.jsonl", "iter_1/candidates/candidates.jsonl",
                "iter_1/judging/judgments.jsonl", "iter_1/pairs/pairs.jsonl"):
        assert (dirs[0] / rel).read_text() == (dirs[1] / rel).read_text(), rel
    assert (dirs[0] / "iter_1" / "judging" / "score_histogram.png").stat().st_size > 1000


def test_gate_remediation_runs_seed_pair_dpo_and_probes_again(tmp_path: Path, env: dict) -> None:
    # A base model that never saw judge-format text, remediated by DPO on (non-judge) seed pairs: the
    # remediated model is a new model that is probed again, and still cannot write "Score: n".
    args = [*SMALL, "train.sft.enabled=false", "self_reward.gate.remediation_rounds=2",
            "self_reward.gate.remediation_epochs=1", "self_reward.iterations=1", "eval=none", "tracking=none"]
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert json.loads((jobdir / "probe" / "DONE.json").read_text())["tripped"]
    for r in (1, 2):
        rem = json.loads((jobdir / f"remediation_{r}" / "DONE.json").read_text())
        assert rem["steps"] > 0 and (jobdir / f"remediation_{r}" / "model" / "config.json").exists()
        probe = json.loads((jobdir / f"probe_{r}" / "DONE.json").read_text())
        assert probe["tripped"] and probe["gate"]["tripped_at"] == 11
    # The second round starts from the first round's model, not from the base again.
    assert json.loads((jobdir / "remediation_2" / "DONE.json").read_text())["inputs"][-1] == json.loads(
        (jobdir / "remediation_1" / "DONE.json").read_text())["uid"]
    summary = json.loads((jobdir / "summary.json").read_text())
    assert summary["gate_outcome"] == "disqualified" and summary["gate_stage"] == "probe_2"
    assert not (jobdir / "iter_1").exists()
