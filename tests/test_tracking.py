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
