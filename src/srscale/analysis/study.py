"""A study read back from MLflow: one record per job and the long history of every metric.

The pipeline's contract (README "Analysis"): one run per job named ``<model>|<lora>|seed=<s>[|<protocol>]``,
tags ``config_id``, ``config_label``, ``protocol``, ``model_params``, ``gate_outcome``, ``gate_stage``,
``iteration_variants`` (``1,3,5``), params the flattened config, metrics with the stage index as step.
Runs written before those tags existed still load: the label falls back to ``model.name|lora.name``
(plus ``|<experiment preset>`` read from ``hydra_overrides``), the id to the label, the seed to the
``seed`` param, the variants to ``self_reward.iterations``. Report runs (tag ``srscale.report=1``)
are never part of a study. Only reads the store (through :mod:`srscale.tracking`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from srscale.errors import SrscaleError

REPORT_TAG = "srscale.report"
DEFAULT_PROTOCOL = "default"
RUN_COLUMNS = ["run_id", "run_name", "status", "config_id", "config_label", "model", "lora", "lora_r",
               "protocol", "seed", "params", "gate_outcome", "gate_stage", "variants", "model_id", "device",
               "generation_backend"]
HISTORY_COLUMNS = ["run_id", "metric", "step", "value"]

_SEED_IN_NAME = re.compile(r"(?:^|\|)seed=(-?\d+)(?:\||$)")
_PRESET_IN_OVERRIDES = re.compile(r"(?:^|[ ,])\+?experiment=([\w.-]+)")


# ------------------------------------------------------------------------------------ pure parsing
def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_variants(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,5"`` -> ``(1, 3, 5)`` (sorted, unique); None when absent or unreadable."""
    if not text:
        return None
    try:
        values = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        return None
    return tuple(values) or None


def lora_rank(params: Mapping[str, str]) -> int | None:
    """The adapter rank, or None for full fine-tuning (``lora.enabled`` false) or when unknown."""
    if str(params.get("lora.enabled", "true")).lower() in ("false", "0", "no"):
        return None
    return _int(params.get("lora.r"))


def run_record(run_id: str, run_name: str | None, status: str, tags: Mapping[str, str],
               params: Mapping[str, str]) -> dict[str, Any]:
    """One job's configuration, seed and gate outcome from its tags and params (see the module doc)."""
    model = params.get("model.name")
    lora = params.get("lora.name")
    protocol = tags.get("protocol")
    if not protocol:
        found = _PRESET_IN_OVERRIDES.search(tags.get("hydra_overrides", ""))
        protocol = found.group(1) if found else DEFAULT_PROTOCOL
    label = tags.get("config_label")
    if not label:
        label = "|".join(str(p) for p in (model, lora) if p is not None) or (run_name or run_id)
        if protocol != DEFAULT_PROTOCOL:
            label += f"|{protocol}"
    seed = _int(params.get("seed"))
    if seed is None and run_name:
        found = _SEED_IN_NAME.search(run_name)
        seed = int(found.group(1)) if found else None
    variants = parse_variants(tags.get("iteration_variants"))
    if variants is None and _int(params.get("self_reward.iterations")) is not None:
        variants = (_int(params["self_reward.iterations"]),)
    n_params = tags.get("model_params")
    return {
        "run_id": run_id, "run_name": run_name, "status": status,
        "config_id": tags.get("config_id") or label, "config_label": label,
        "model": model, "lora": lora, "lora_r": lora_rank(params), "protocol": protocol, "seed": seed,
        "params": float(n_params) if n_params not in (None, "", "None") else None,
        "gate_outcome": tags.get("gate_outcome"), "gate_stage": tags.get("gate_stage"),
        "variants": variants, "model_id": tags.get("model_id"), "device": tags.get("device"),
        "generation_backend": tags.get("generation_backend"),
    }


# ------------------------------------------------------------------------------------ the store
def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default ``sqlite:///mlflow.db`` (cwd)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def check_store(uri: str, experiment: str) -> None:
    """One-line errors for a sqlite store that does not exist or an experiment it does not hold.

    Checked before any MLflow call, since opening a missing sqlite path creates an empty store there.
    """
    from srscale.tracking import experiment_names

    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.is_file():
            raise SrscaleError(f"no MLflow store at {path}: pass --tracking-uri sqlite:///path/to/mlflow.db "
                               "(or set MLFLOW_TRACKING_URI) to the store the sweep wrote")
    names = experiment_names(uri)
    if experiment not in names:
        have = ", ".join(sorted(names)) or "none"
        raise SrscaleError(f"experiment '{experiment}' not found in {uri} (experiments there: {have}); "
                           "pass --experiment NAME (the sweep's tracking.experiment)")


@dataclass
class Study:
    """Every job of one experiment: ``runs`` (one row per job, ``RUN_COLUMNS`` + latest metrics) and
    ``history`` (``run_id, metric, step, value``: every logged value of every metric)."""

    tracking_uri: str
    experiment: str
    runs: pd.DataFrame
    history: pd.DataFrame

    @property
    def finished(self) -> pd.DataFrame:
        """Runs that ended normally (passed or disqualified); failed and running jobs are left out."""
        return self.runs[self.runs["status"] == "FINISHED"]


def load_study(tracking_uri: str | None, experiment: str, with_history: bool = True) -> Study:
    """Read every job run of ``experiment`` (report runs skipped); one-line error if it is not there."""
    from srscale.tracking import find_runs, metric_history

    uri = resolve_tracking_uri(tracking_uri)
    check_store(uri, experiment)
    records, history = [], []
    for run in find_runs(uri, experiment):
        tags, params = run.data.tags, run.data.params
        if tags.get(REPORT_TAG) == "1":
            continue
        rec = run_record(run.info.run_id, run.info.run_name, run.info.status, tags, params)
        rec.update(run.data.metrics)
        records.append(rec)
        if with_history:
            for key in sorted(run.data.metrics):
                history.extend((run.info.run_id, key, step, value)
                               for step, value in metric_history(uri, run.info.run_id, key))
    runs = pd.DataFrame(records, columns=None if records else RUN_COLUMNS)
    hist = pd.DataFrame(history, columns=HISTORY_COLUMNS)
    # MLflow keeps every value logged at a step; the last one logged is the one the UI shows.
    hist = hist.drop_duplicates(["run_id", "metric", "step"], keep="last").reset_index(drop=True)
    return Study(uri, experiment, runs, hist)
