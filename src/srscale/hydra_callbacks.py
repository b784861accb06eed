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
        keys = ("backend", "tracking_uri", "experiment")  # the rest of TrackingConfig is not needed here
        ensure_store(TrackingConfig(**{k: tracking[k] for k in keys if k in tracking}))
