"""A job directory is the job: it extends to more iterations in place, resumes after a move, logs into
whichever store it is given, closes a run a kill left RUNNING, and refuses another configuration."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from conftest import JUDGES, NO_GATE, SMALL, merged, run_cli, store
from srscale.tracking import find_runs

pytestmark = pytest.mark.slow

ARGS = merged(SMALL, JUDGES, NO_GATE, ["eval=none", "tracking.log_models=false"])


def _points(uri: str, run_id: str) -> Counter:
    client = mlflow.MlflowClient(tracking_uri=uri)
    keys = client.get_run(run_id).data.metrics
    return Counter((k, m.step) for k in keys for m in client.get_metric_history(run_id, k))


def test_a_job_directory_extends_moves_and_changes_store(tmp_path: Path, env: dict) -> None:
    out = run_cli([*ARGS, "self_reward.iterations=1"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    assert "iterations" not in jobdir.name  # T is not part of the job's identity
    iter1 = (jobdir / "iter_1" / "DONE.json").stat().st_mtime

    # Moved elsewhere (and the original gone): T=2 extends it from its own weights, running iteration 2 only.
    moved = tmp_path / "moved" / jobdir.name
    moved.parent.mkdir()
    shutil.move(str(jobdir), moved)
    out = run_cli([*ARGS, "self_reward.iterations=2", f"hydra.run.dir='{moved}'"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (moved / "iter_1" / "DONE.json").stat().st_mtime == iter1
    it2 = json.loads((moved / "iter_2" / "DONE.json").read_text())
    assert it2["model_dir"] == "iter_2/dpo/model" and (moved / "iter_2" / "dpo" / "model").is_dir()
    assert json.loads((moved / "summary.json").read_text())["iterations_completed"] == 2

    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED" and run.data.tags["iteration_variants"] == "1,2"
    points = _points(store(tmp_path), run.info.run_id)
    assert max(points.values()) == 1, [p for p, n in points.items() if n > 1]  # no (key, step) twice
    assert points[("iter/candidates", 1)] == points[("iter/candidates", 2)] == 1

    # A kill after summary.json left the run RUNNING: re-running the finished job closes it, adds nothing.
    mlflow.MlflowClient(tracking_uri=store(tmp_path)).update_run(run.info.run_id, status="RUNNING")
    out = run_cli([*ARGS, "self_reward.iterations=2", f"hydra.run.dir='{moved}'"], tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = find_runs(store(tmp_path), "srscale")
    assert run.info.status == "FINISHED" and _points(store(tmp_path), run.info.run_id) == points

    # Another store: the job finds no run of its own there, creates one, and logs everything into it.
    stamp = (moved / "iter_2" / "DONE.json").stat().st_mtime
    other = f"sqlite:///{tmp_path / 'other.db'}"
    out = run_cli([*ARGS, "self_reward.iterations=2", f"hydra.run.dir='{moved}'", f"tracking.tracking_uri={other}"],
                  tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (fresh,) = find_runs(other, "srscale")
    # Everything the first store holds, except the job total's history: that store also has the total
    # as it stood after iteration 1 (logged then), a fresh store only the total of the job as it is.
    final_total = {p: n for p, n in points.items() if not p[0].startswith("cost/total/") or p[1] == 2}
    assert fresh.info.status == "FINISHED" and _points(other, fresh.info.run_id) == final_total
    assert (moved / "iter_2" / "DONE.json").stat().st_mtime == stamp  # nothing recomputed

    # Another configuration pointed at this directory is refused in one line, and nothing is touched.
    out = run_cli([*ARGS, "train.sft.learning_rate=0.5", f"hydra.run.dir='{moved}'"], tmp_path, env)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1 and "another configuration" in lines[0], out.stderr
    assert "train.sft.learning_rate" in lines[0]
