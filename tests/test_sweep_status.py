"""``python -m srscale.sweep status``: one line per job of a sweep, from the files jobs leave."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import SMALL, run_cli
from srscale import jobstate
from srscale.sweep import (
    JobRow,
    describe,
    format_duration,
    format_row,
    main,
    relaunch_line,
    summary_line,
    sweep_job_overrides,
    sweep_status,
)

NOW = 1_000_000.0


# ---------------------------------------------------------------------------------- pure logic
def test_describe_done_disqualified_failed() -> None:
    done = describe({"state": "done", "started_at": NOW - 150, "updated_at": NOW - 10, "run_id": "r1",
                     "iterations_completed": 3}, {"gate_outcome": "passed"}, None, ("model=tiny",), 3, NOW)
    assert (done.state, done.iterations, done.wall_s, done.run_id) == ("done", 3, 140.0, "r1")
    dq = describe({"state": "disqualified", "gate_stage": "probe", "started_at": NOW - 20, "updated_at": NOW,
                   "iterations_completed": 0}, {"gate_outcome": "disqualified"}, "r2", (), 0, NOW)
    assert (dq.state, dq.detail, dq.iterations, dq.run_id) == ("disqualified", "probe", 0, "r2")
    failed = describe({"state": "failed", "reason": "RuntimeError: boom", "started_at": NOW - 5,
                       "updated_at": NOW - 1}, None, None, (), 1, NOW)
    assert (failed.state, failed.detail, failed.iterations, failed.wall_s) == ("failed", "RuntimeError: boom", 1, 4.0)


def test_describe_running_counts_wall_time_to_now_and_iterations_on_disk() -> None:
    row = describe({"state": "running", "started_at": NOW - 3700, "updated_at": NOW - 3000}, None, "r", (), 2, NOW)
    assert (row.state, row.wall_s, row.iterations) == ("running", 3700.0, 2)
    assert format_duration(row.wall_s) == "1h01m" and format_row(row).startswith("running ")
    staged = describe({"state": "running", "stage": "iter_3", "started_at": NOW - 5}, None, "r", (), 2, NOW)
    assert format_row(staged).startswith("running@iter_3 ")


def test_describe_summary_without_state_record_and_not_started() -> None:
    legacy = describe({"state": "not_started"}, {"gate_outcome": "disqualified", "gate_stage": "iter_2",
                                                  "iterations_completed": 1}, "r", (), 1, NOW)
    assert (legacy.state, legacy.detail, legacy.iterations, legacy.wall_s) == ("disqualified", "iter_2", 1, None)
    fresh = describe({"state": "not_started"}, None, None, ("seed=3",), 0, NOW)
    assert (fresh.state, fresh.iterations, fresh.run_id) == ("not_started", None, None)


def test_rows_and_relaunch_lines() -> None:
    row = JobRow(overrides=("model=tiny_4m", "model.lora_targets=[q_proj,k_proj]"), state="failed",
                 detail="model=tiny_4m: no such thing", iterations=0, wall_s=61, run_id="abc")
    line = format_row(row)
    assert line.startswith("failed") and "1m01s" in line and "abc" in line
    assert line.endswith("model=tiny_4m model.lora_targets=[q_proj,k_proj]  -- model=tiny_4m: no such thing")
    assert shlex.split(relaunch_line(row)) == list(row.overrides)
    rows = [row, JobRow((), "done"), JobRow((), "disqualified", "probe"), JobRow((), "not_started")]
    assert summary_line(rows) == "4 jobs: 1 done, 1 disqualified, 1 failed, 1 not started"
    assert format_row(rows[2]).startswith("disqualified@probe")


def test_sweep_jobs_from_multirun_yaml() -> None:
    multirun = {"hydra": {"sweeper": {"params": {"lora": "full,r8"}}, "overrides": {"task": ["model=tiny_1m", "seed=1,2"]}}}
    jobs = sweep_job_overrides(multirun)
    assert sorted(jobs) == sorted([("lora=full", "model=tiny_1m", "seed=1"), ("lora=full", "model=tiny_1m", "seed=2"),
                                   ("lora=r8", "model=tiny_1m", "seed=1"), ("lora=r8", "model=tiny_1m", "seed=2")])


def _job(root: Path, name: str, overrides: list[str]) -> Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return d


def test_sweep_status_reads_job_directories_and_unstarted_jobs(tmp_path: Path) -> None:
    done = _job(tmp_path, "seed=1", ["seed=1"])
    jobstate.write_state(done, "running", overrides="seed=1", run_id="r1")
    (done / "iter_1").mkdir()
    (done / "iter_1" / "DONE.json").write_text("{}")
    (done / "summary.json").write_text(json.dumps({"gate_outcome": "passed", "iterations_completed": 1}))
    jobstate.write_state(done, "done", iterations_completed=1)
    killed = _job(tmp_path, "seed=2", ["seed=2"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    jobstate.write_state(killed, "running", run_id="r2")
    record = json.loads((killed / jobstate.STATE_FILE).read_text())
    (killed / jobstate.STATE_FILE).write_text(json.dumps({**record, "pid": dead.pid}))
    running = _job(tmp_path, "seed=3", ["seed=3"])
    jobstate.write_state(running, "running", run_id="r3")  # this process: alive
    (tmp_path / ".submitit").mkdir()
    (tmp_path / "mlartifacts").mkdir()
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": ["seed=1,2,3,4"]}}}))
    rows = {r.overrides: r for r in sweep_status(tmp_path)}
    assert {k: r.state for k, r in rows.items()} == {("seed=1",): "done", ("seed=2",): "killed",
                                                   ("seed=3",): "running", ("seed=4",): "not_started"}
    assert rows[("seed=1",)].iterations == 1 and rows[("seed=1",)].run_id == "r1"
    assert rows[("seed=2",)].run_id == "r2"


def test_status_of_a_missing_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["status", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sweep folder" in err


# -------------------------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_status_of_a_sweep_with_finished_disqualified_and_failed_jobs(tmp_path: Path, env: dict) -> None:
    # suite x gate 100000 -> done; suite x gate 0 -> disqualified at the probe (the tiny model's
    # judgments do not parse); jsonl without files -> failed (twice). Two at a time through joblib.
    sweep = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *SMALL, "self_reward.iterations=1",
             "data=suite,jsonl", "self_reward.gate.max_consecutive=100000,0"]
    out = run_cli(sweep, tmp_path, env, timeout=1200)
    assert out.returncode == 2, out.stderr[-3000:]
    failed_lines = [line for line in out.stderr.splitlines() if line.startswith("srscale: job failed:")]
    assert len(failed_lines) == 2 and all("data=jsonl" in line for line in failed_lines), failed_lines

    status = subprocess.run([sys.executable, "-m", "srscale.sweep", "status", "outputs"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].split()[:2] == ["STATE", "ITERS"] and lines[-1] == "4 jobs: 1 done, 1 disqualified, 2 failed"
    by_job = {}
    for line in lines[1:-1]:
        data = "jsonl" if "data=jsonl" in line else "suite"
        gate = "0" if "self_reward.gate.max_consecutive=0" in line else "100000"
        by_job[(data, gate)] = line
    assert by_job[("suite", "100000")].split()[:2] == ["done", "1"]
    assert by_job[("suite", "0")].split()[:2] == ["disqualified@probe", "0"]
    for gate in ("0", "100000"):
        line = by_job[("jsonl", gate)]
        assert line.startswith("failed") and "-- " in line and "data.data_files" in line.split("-- ", 1)[1]
    for line in by_job.values():
        assert len(line.split()[3]) == 32  # an MLflow run id

    relaunch = subprocess.run([sys.executable, "-m", "srscale.sweep", "status", "outputs", "--failed"], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=120)
    jobs = [shlex.split(line) for line in relaunch.stdout.splitlines()]
    assert len(jobs) == 2 and all("data=jsonl" in job and "model=tiny_300k" in job for job in jobs)

    # Re-launching the sweep starts only the unfinished jobs (the two that fail again).
    again = run_cli(sweep[:1] + sweep[3:], tmp_path, env, timeout=600)
    assert again.returncode == 2
    assert "2 of 4 jobs already finished (summary.json): not launched again" in again.stdout + again.stderr
    assert len([line for line in again.stderr.splitlines() if line.startswith("srscale: job failed:")]) == 2


def test_is_finished_counts_iterations_asked_for(tmp_path: Path) -> None:
    assert not jobstate.is_finished(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"gate_outcome": "passed", "iterations_completed": 3}))
    assert jobstate.is_finished(tmp_path) and jobstate.is_finished(tmp_path, 3)
    assert not jobstate.is_finished(tmp_path, 5)  # asked for more: the job extends in place
    (tmp_path / "summary.json").write_text(json.dumps({"gate_outcome": "disqualified", "iterations_completed": 1}))
    assert jobstate.is_finished(tmp_path, 5)  # a disqualified model stays disqualified
