"""Experiment tracking: the only module that imports ``mlflow``.

One :class:`Tracker` interface, two backends: :class:`MlflowTracker` (one MLflow run per job, resumed
by run id when a killed job is re-run) and :class:`NullTracker`. The store is
``tracking.tracking_uri`` if set, else ``$MLFLOW_TRACKING_URI``, else MLflow's own default (a sqlite
file ``mlflow.db`` in the working directory).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from srscale.config import TrackingConfig

log = logging.getLogger(__name__)

MAX_PARAM_LEN = 6000  # MLflow >= 2.x accepts long param values; longer ones go to the config artifact


class Tracker:
    """What the pipeline calls. Every method is a no-op here."""

    run_id: str | None = None

    def log_params(self, params: dict[str, Any]) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker(Tracker):
    pass


def _resolve_uri(cfg: TrackingConfig) -> str | None:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


class MlflowTracker(Tracker):
    """One MLflow run. ``resume_id`` reopens an existing run instead of creating one."""

    def __init__(self, cfg: TrackingConfig, run_name: str, resume_id: str | None = None):
        import mlflow

        self._mlflow = mlflow
        uri = _resolve_uri(cfg)
        if uri:
            mlflow.set_tracking_uri(uri)
        self.tracking_uri = mlflow.get_tracking_uri()
        client = mlflow.MlflowClient()
        exp = client.get_experiment_by_name(cfg.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(cfg.experiment)
        self._client = client
        if resume_id:
            client.update_run(resume_id, status="RUNNING")
            self.run_id = resume_id
        else:
            self.run_id = client.create_run(exp_id, run_name=run_name).info.run_id
        self.experiment_id = exp_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        existing = self._client.get_run(self.run_id).data.params
        items = [Param(k, _param_value(v)) for k, v in params.items() if k not in existing]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items() if v is not None]
        for i in range(0, len(items), 100):
            self._client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            self._client.log_batch(self.run_id, metrics=items[i:i + 500])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._client.log_artifacts(self.run_id, str(path), artifact_path)
        elif path.exists():
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self.run_id, text, artifact_file)

    def end(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status=status)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LEN else text[: MAX_PARAM_LEN - 3] + "..."


def make_tracker(cfg: TrackingConfig, run_name: str, resume_id: str | None = None) -> Tracker:
    if cfg.backend == "none":
        return NullTracker()
    return MlflowTracker(cfg, run_name, resume_id)


def ensure_store(cfg: TrackingConfig) -> None:
    """Create the store's schema and experiment once, before parallel jobs race to do it."""
    if cfg.backend == "none":
        return
    import mlflow

    uri = _resolve_uri(cfg)
    if uri:
        mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    if client.get_experiment_by_name(cfg.experiment) is None:
        client.create_experiment(cfg.experiment)


def find_runs(tracking_uri: str, experiment: str) -> list:
    """All runs of an experiment (for tests and the analysis notebooks)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], max_results=10000)


def metric_history(tracking_uri: str, run_id: str, key: str) -> list[tuple[int, float]]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def experiment_names(tracking_uri: str) -> list[str]:
    """Names of the experiments in a store (the analysis command's one-line error lists them)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    return [e.name for e in client.search_experiments()]
