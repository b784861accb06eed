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
    def get_tag(self, key: str) -> str | None: ...
    def logged_steps(self, keys: list[str]) -> dict[str, set[int]]:
        """The steps already logged for each key in this run (for exactly-once logging)."""
        return {}
    def status(self) -> str | None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class NullTracker(Tracker):
    pass


def _resolve_uri(cfg: TrackingConfig) -> str | None:
    return cfg.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def store_key(cfg: TrackingConfig) -> str:
    """Which store and experiment a run lives in: a job keeps one run per key (``tracking.json``)."""
    import mlflow

    return f"{_resolve_uri(cfg) or mlflow.get_tracking_uri()}#{cfg.experiment}"


class MlflowTracker(Tracker):
    """One MLflow run. ``resume_id`` reopens an existing run of this store instead of creating one; a
    ``resume_id`` the store does not hold (the job was tracked elsewhere) starts a new run."""

    def __init__(self, cfg: TrackingConfig, run_name: str, resume_id: str | None = None,
                 reopen: bool = True):
        import mlflow

        self._mlflow = mlflow
        uri = _resolve_uri(cfg)
        if uri:
            mlflow.set_tracking_uri(uri)
        self.tracking_uri = mlflow.get_tracking_uri()
        with store_lock(self.tracking_uri):
            client = mlflow.MlflowClient()
            exp = client.get_experiment_by_name(cfg.experiment)
            exp_id = exp.experiment_id if exp else client.create_experiment(cfg.experiment)
        self._client = client
        self.resumed = False
        if resume_id and _run_exists(client, resume_id, exp_id):
            if reopen:
                client.update_run(resume_id, status="RUNNING")
            self.run_id, self.resumed = resume_id, True
        else:
            self.run_id = client.create_run(exp_id, run_name=run_name).info.run_id
        self.experiment_id = exp_id

    def get_tag(self, key: str) -> str | None:
        return self._client.get_run(self.run_id).data.tags.get(key)

    def status(self) -> str | None:
        return self._client.get_run(self.run_id).info.status

    def logged_steps(self, keys: list[str]) -> dict[str, set[int]]:
        logged = self._client.get_run(self.run_id).data.metrics
        return {k: {m.step for m in self._client.get_metric_history(self.run_id, k)} for k in keys if k in logged}

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


def _run_exists(client, run_id: str, experiment_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    return run.info.experiment_id == experiment_id and run.info.lifecycle_stage == "active"


def make_tracker(cfg: TrackingConfig, run_name: str, resume_id: str | None = None, reopen: bool = True) -> Tracker:
    if cfg.backend == "none":
        return NullTracker()
    return MlflowTracker(cfg, run_name, resume_id, reopen=reopen)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser()


class store_lock:
    """An exclusive file lock beside a sqlite store (``<db>.lock``) while its schema or experiment is
    created: MLflow's first schema creation is not safe across processes (several jobs starting at
    once on a fresh store crash with ``duplicate column name``). Other stores need no lock."""

    def __init__(self, uri: str):
        db = _sqlite_path(uri)
        self.path = db.with_name(db.name + ".lock") if db is not None else None
        self._fh = None

    def __enter__(self):
        if self.path is not None:
            import fcntl

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("a")
            fcntl.flock(self._fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            import fcntl

            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def ensure_store(cfg: TrackingConfig) -> None:
    """Create the store's schema and experiment once, before parallel jobs race to do it."""
    if cfg.backend == "none":
        return
    import mlflow

    uri = _resolve_uri(cfg)
    if uri:
        mlflow.set_tracking_uri(uri)
    with store_lock(mlflow.get_tracking_uri()):
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
