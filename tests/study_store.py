"""Write synthetic job runs into a real sqlite MLflow store, named and tagged as the pipeline does.

The contract (README "Analysis"): run name ``<model>|<lora>|seed=<s>[|<protocol>]``; tags
``model_params``, ``model_id``, ``gate_outcome``, ``gate_stage``, ``config_id``, ``config_label``,
``protocol``, ``device``, ``iteration_variants``, ``generation_backend``; params the flattened config;
metrics with the stage index as step.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import mlflow
from mlflow.entities import Metric, Param, RunTag

PARAMS = {"tiny_300k": 240_000, "tiny_1m": 1_240_000, "tiny_4m": 4_500_000, "tiny_16m": 16_000_000}
RANKS = {"full": None, "r8": 8, "r16": 16, "r32": 32}


@dataclass
class Job:
    model: str
    lora: str
    seed: int
    outcome: str = "passed"  # passed | disqualified
    gate_stage: str | None = None  # probe | iter_<t> when disqualified
    variants: Sequence[int] = (2,)
    protocol: str = "default"
    metrics: Mapping[str, Sequence[tuple[int, float]]] = field(default_factory=dict)  # key -> [(step, value)]
    status: str = "FINISHED"

    @property
    def label(self) -> str:
        return f"{self.model}|{self.lora}" + (f"|{self.protocol}" if self.protocol != "default" else "")

    @property
    def run_name(self) -> str:
        return f"{self.model}|{self.lora}|seed={self.seed}" + (
            f"|{self.protocol}" if self.protocol != "default" else "")


def write_jobs(uri: str, experiment: str, jobs: Sequence[Job]) -> dict[str, str]:
    """Log every job as one finished run; returns run name -> run id."""
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    ids = {}
    for job in jobs:
        rid = client.create_run(exp_id, run_name=job.run_name).info.run_id
        rank = RANKS[job.lora]
        params = {"model.name": job.model, "lora.name": job.lora, "lora.enabled": str(rank is not None),
                  "lora.r": str(rank or 16), "seed": str(job.seed),
                  "self_reward.iterations": str(max(job.variants))}
        tags = {"model_params": str(PARAMS[job.model]), "model_id": job.model, "gate_outcome": job.outcome,
                "config_id": hashlib.sha1(job.label.encode()).hexdigest()[:12], "config_label": job.label,
                "protocol": job.protocol, "device": "cpu", "generation_backend": "hf",
                "iteration_variants": ",".join(map(str, job.variants))}
        if job.gate_stage:
            tags["gate_stage"] = job.gate_stage
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now + i, step) for k, points in job.metrics.items()
                   for i, (step, v) in enumerate(points)]
        client.log_batch(rid, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        for i in range(0, len(metrics), 500):
            client.log_batch(rid, metrics=metrics[i:i + 500])
        client.set_terminated(rid, status=job.status)
        ids[job.run_name] = rid
    return ids


def stages(values: Sequence[float], start: int = 0) -> list[tuple[int, float]]:
    """``[v0, v1, ...]`` -> ``[(start, v0), (start + 1, v1), ...]``."""
    return [(start + i, v) for i, v in enumerate(values)]
