"""Hydra callbacks (registered under ``hydra.callbacks`` in ``conf/config.yaml``).

:class:`CreateStoreFirst` creates the MLflow store's schema and the experiment once, before a sweep's
jobs start: MLflow's first schema creation races when two processes (a parallel launcher's jobs) open a
fresh sqlite store at the same time.
"""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class CreateStoreFirst(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from srscale.config import TrackingConfig
        from srscale.tracking import ensure_store

        tracking = config.get("tracking")
        if tracking is None:
            return
        ensure_store(TrackingConfig(backend=tracking.get("backend", "mlflow"),
                                    tracking_uri=tracking.get("tracking_uri"),
                                    experiment=tracking.get("experiment", "srscale")))
