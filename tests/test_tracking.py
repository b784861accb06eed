"""MLflow against a real sqlite store: runs, params, tags, metrics, artifacts, FAILED status, resume."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from srscale.config import TrackingConfig
from srscale.tracking import MlflowTracker, NullTracker, ensure_store, find_runs, make_tracker, metric_history


@pytest.fixture()
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_run_records_params_tags_metrics_artifacts(store: str, tmp_path: Path) -> None:
    cfg = TrackingConfig(tracking_uri=store, experiment="t1")
    ensure_store(cfg)
    tr = make_tracker(cfg, run_name="job-a")
    tr.log_params({"lora.r": 16, "model.name": "tiny", "targets": ["q_proj", "k_proj"]})
    tr.set_tags({"model_id": "tiny", "model_params": 1234})
    tr.log_metrics({"sft/loss": 3.0}, step=1)
    tr.log_metrics({"sft/loss": 2.0}, step=2)
    f = tmp_path / "adapter"
    f.mkdir()
    (f / "adapter_config.json").write_text("{}")
    tr.log_artifact(f, "sft_model")
    tr.log_text("a: 1\n", "config/resolved.yaml")
    tr.end("FINISHED")

    runs = find_runs(store, "t1")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "job-a"
    assert run.data.params["lora.r"] == "16" and run.data.params["targets"] == '["q_proj", "k_proj"]'
    assert run.data.tags["model_params"] == "1234"
    assert metric_history(store, run.info.run_id, "sft/loss") == [(1, 3.0), (2, 2.0)]
    client = mlflow.MlflowClient(tracking_uri=store)
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"sft_model", "config"} <= names
    assert [a.path for a in client.list_artifacts(run.info.run_id, "sft_model")] == ["sft_model/adapter_config.json"]


def test_failed_run_and_resume_same_run(store: str) -> None:
    cfg = TrackingConfig(tracking_uri=store, experiment="t2")
    tr = make_tracker(cfg, run_name="job-b")
    tr.log_params({"a": 1})
    tr.end("FAILED")
    again = make_tracker(cfg, run_name="job-b", resume_id=tr.run_id)
    again.log_params({"a": 1, "b": 2})  # already-logged params are skipped, not re-logged
    again.end("FINISHED")
    runs = find_runs(store, "t2")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.params == {"a": "1", "b": "2"}


def test_env_var_selects_store(tmp_path: Path, monkeypatch) -> None:
    uri = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tr = MlflowTracker(TrackingConfig(experiment="t3"), run_name="x")
    tr.end()
    assert len(find_runs(uri, "t3")) == 1


def test_null_tracker_is_silent() -> None:
    tr = make_tracker(TrackingConfig(backend="none"), run_name="x")
    assert isinstance(tr, NullTracker)
    tr.log_metrics({"a": 1.0}, step=0)
    tr.end()


def test_a_sweep_creates_the_store_before_its_jobs(store: str) -> None:
    from omegaconf import OmegaConf

    from srscale.hydra_callbacks import CreateStoreFirst

    CreateStoreFirst().on_multirun_start(OmegaConf.create(
        {"tracking": {"backend": "mlflow", "tracking_uri": store, "experiment": "sweep"}}))
    assert mlflow.MlflowClient(tracking_uri=store).get_experiment_by_name("sweep") is not None
    CreateStoreFirst().on_multirun_start(OmegaConf.create({"tracking": {"backend": "none"}}))  # no store: no-op


_START_JOB = r"""
import sys
from srscale.config import TrackingConfig
from srscale.tracking import ensure_store, make_tracker
cfg = TrackingConfig(tracking_uri=sys.argv[1], experiment="race")
ensure_store(cfg)
tracker = make_tracker(cfg, run_name=sys.argv[2])
tracker.log_metrics({"m": 1.0}, step=0)
tracker.end()
"""


def test_four_jobs_starting_at_once_on_a_fresh_sqlite_store_all_finish(tmp_path: Path) -> None:
    import subprocess
    import sys

    uri = f"sqlite:///{tmp_path / 'fresh.db'}"
    procs = [subprocess.Popen([sys.executable, "-c", _START_JOB, uri, f"job{i}"], stderr=subprocess.PIPE, text=True)
             for i in range(4)]
    errors = [p.communicate(timeout=180)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(e[-500:] for e in errors)
    runs = find_runs(uri, "race")
    assert sorted(r.info.run_name for r in runs) == ["job0", "job1", "job2", "job3"]
    assert all(r.info.status == "FINISHED" and r.data.metrics == {"m": 1.0} for r in runs)


def test_a_run_id_from_another_store_starts_a_new_run_here(store: str, tmp_path: Path) -> None:
    first = make_tracker(TrackingConfig(tracking_uri=store, experiment="t5"), run_name="job")
    first.end()
    other = f"sqlite:///{tmp_path / 'other.db'}"
    second = make_tracker(TrackingConfig(tracking_uri=other, experiment="t5"), run_name="job", resume_id=first.run_id)
    assert second.run_id != first.run_id and not second.resumed
    second.end()
    assert len(find_runs(other, "t5")) == 1 and len(find_runs(store, "t5")) == 1
    again = make_tracker(TrackingConfig(tracking_uri=store, experiment="t5"), run_name="job", resume_id=first.run_id)
    assert again.run_id == first.run_id and again.resumed
