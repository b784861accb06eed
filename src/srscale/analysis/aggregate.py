"""Seeds to configurations: iteration variants, means with 95% intervals, pass rates, gains over SFT.

Pure functions on the frames of :class:`srscale.analysis.study.Study`. Definitions:

- A run's *variants* are the iteration counts T it stands for (tag ``iteration_variants``); variant T
  uses the run's steps ``0..T`` only (step 0 = the SFT model M1, step t = after iteration t). A run
  without variants stands for its last logged step.
- A variant's *gate outcome*: ``passed`` if the run passed, or was disqualified at ``iter_k`` with
  k > T (the first T iterations all passed); ``disqualified`` otherwise; None when the run has no
  ``gate_outcome`` tag.
- Runs with the same ``config_id`` differ only by seed; every statistic over them is per
  ``(config_id, T, metric, step)``: mean with a Student-t 95% interval (:func:`stats.mean_ci`), cut to
  the metric's range (:func:`stats.metric_bounds`; a gain's range is the difference of two values).
- The *gain over SFT* of a metric at step t is ``value(t) - value(0)`` within each run, then averaged
  over seeds; it is paired with the cumulative cost at step t (``cost/cumulative/flops``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from srscale.analysis.stats import UNBOUNDED, difference_bounds, mean_ci, metric_bounds, wilson

CONFIG_COLUMNS = ["config_id", "config_label", "model", "lora", "lora_r", "protocol", "params"]
ROW_COLUMNS = ["run_id", "config_id", "seed", "T", "outcome", "metric", "step", "value"]
SUMMARY_COLUMNS = ["config_id", "T", "metric", "step", "mean", "low", "high", "n", "sd"]
PASS_COLUMNS = ["config_id", "T", "n", "passed", "rate", "low", "high"]
GAIN_COLUMNS = ["config_id", "T", "step", "gain", "gain_low", "gain_high", "n", "cost", "cost_low", "cost_high"]
CUMULATIVE_FLOPS = "cost/cumulative/flops"
# Metrics the tables derive per run and step as a difference of two logged ones (name: (minuend, subtrahend)).
# The judge's margin over its own chance level, taken within each seed, is the paired test of "above
# chance": seeds differ in both, so the two means' intervals overlap where every seed is well above it.
JUDGE_OVER_CHANCE = "eval/rm/pairwise_over_chance"
DERIVED = {JUDGE_OVER_CHANCE: ("eval/rm/pairwise_accuracy", "eval/rm/pairwise_chance")}

_ITER_STAGE = re.compile(r"iter_(\d+)")


def variant_outcome(gate_outcome: str | None, gate_stage: str | None, T: int) -> str | None:
    """The gate outcome of a run's T-iteration variant (see the module doc)."""
    if gate_outcome == "passed":
        return "passed"
    if gate_outcome == "disqualified":
        found = _ITER_STAGE.fullmatch(gate_stage or "")
        return "passed" if found and int(found.group(1)) > T else "disqualified"
    return None


def configs(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: its label, model, LoRA, protocol and size, and its seeds."""
    if runs.empty:
        return pd.DataFrame(columns=[*CONFIG_COLUMNS, "seeds", "n_runs"])
    grouped = runs.groupby("config_id", sort=False)
    first = grouped[CONFIG_COLUMNS[1:]].first()
    first["seeds"] = grouped["seed"].apply(lambda s: tuple(sorted(x for x in s if pd.notna(x))))
    first["n_runs"] = grouped.size()
    return first.reset_index().sort_values(["params", "config_label"], na_position="last").reset_index(drop=True)


def with_derived(history: pd.DataFrame, derived: dict[str, tuple[str, str]] = DERIVED) -> pd.DataFrame:
    """``history`` plus each :data:`DERIVED` metric at every (run, step) that logged both of its parts."""
    if history.empty:
        return history
    frames = [history]
    for name, (a, b) in derived.items():
        wide = history[history["metric"].isin([a, b])].pivot_table(index=["run_id", "step"], columns="metric",
                                                                   values="value", aggfunc="last")
        if a not in wide.columns or b not in wide.columns:
            continue
        diff = (wide[a] - wide[b]).dropna().rename("value").reset_index()
        frames.append(diff.assign(metric=name)[history.columns])
    return pd.concat(frames, ignore_index=True)


def run_variants(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, T): ``run_id, config_id, seed, T, outcome``."""
    last_step = history.groupby("run_id")["step"].max() if not history.empty else pd.Series(dtype=int)
    rows = []
    for r in runs.itertuples(index=False):
        variants = r.variants if isinstance(r.variants, tuple) and r.variants else None
        if variants is None:
            variants = (int(last_step.get(r.run_id, 0)),)
        for T in variants:
            rows.append((r.run_id, r.config_id, r.seed, int(T), variant_outcome(r.gate_outcome, r.gate_stage, T)))
    return pd.DataFrame(rows, columns=ROW_COLUMNS[:5])


def expand(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The history once per variant, cut to steps ``<= T``: columns ``ROW_COLUMNS``."""
    variants = run_variants(runs, history)
    if variants.empty or history.empty:
        return pd.DataFrame(columns=ROW_COLUMNS)
    rows = variants.merge(history, on="run_id")
    rows = rows[rows["step"] <= rows["T"]]
    return rows[ROW_COLUMNS].reset_index(drop=True)


def _estimates(grouped, keys: list[str], column: str, prefix: str = "", bounds=lambda key: UNBOUNDED) -> pd.DataFrame:
    """One row per group: the keys, then mean/low/high (named with ``prefix``), n and sd of ``column``;
    ``bounds(key)`` is the range the group's interval is cut to."""
    names = ("mean", "low", "high") if not prefix else (prefix, f"{prefix}_low", f"{prefix}_high")
    records = []
    for key, values in grouped[column]:
        e = mean_ci(values.tolist(), bounds=bounds(key))
        records.append({**dict(zip(keys, key, strict=True)),
                        names[0]: e.mean, names[1]: e.low, names[2]: e.high, "n": e.n, "sd": e.sd})
    return pd.DataFrame(records, columns=[*keys, *names, "n", "sd"])


def summarize(rows: pd.DataFrame, keys: Sequence[str] = ("config_id", "T", "metric", "step")) -> pd.DataFrame:
    """Mean, 95% interval (None for one seed), n and sd of ``value`` per ``keys``."""
    keys = list(keys)
    if rows.empty:
        return pd.DataFrame(columns=[*keys, *SUMMARY_COLUMNS[4:]])
    at = keys.index("metric") if "metric" in keys else None
    return _estimates(rows.groupby(keys, sort=True), keys, "value",
                      bounds=lambda key: UNBOUNDED if at is None else metric_bounds(key[at]))


def pass_rates(variants: pd.DataFrame) -> pd.DataFrame:
    """Per (config, T): seeds with a known outcome, how many passed, the rate and its Wilson interval."""
    known = variants[variants["outcome"].notna()]
    rows = []
    for (config_id, T), grp in known.groupby(["config_id", "T"], sort=True):
        passed = int((grp["outcome"] == "passed").sum())
        e = wilson(passed, len(grp))
        rows.append((config_id, T, len(grp), passed, e.mean, e.low, e.high))
    return pd.DataFrame(rows, columns=PASS_COLUMNS)


def gains(rows: pd.DataFrame, metric: str, cost_metric: str = CUMULATIVE_FLOPS) -> pd.DataFrame:
    """Gain of ``metric`` over step 0 at each step t >= 1, per seed then aggregated, beside the cost.

    A run without the metric at step 0 has no gain; the cost column is empty where ``cost_metric``
    was not logged.
    """
    per_run = rows[rows["metric"] == metric].pivot_table(index=["run_id", "config_id", "T"], columns="step",
                                                          values="value", aggfunc="last")
    if per_run.empty or 0 not in per_run.columns:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    gain = per_run.drop(columns=[0]).sub(per_run[0], axis=0)
    gain = gain.stack().rename("gain").reset_index().dropna(subset=["gain"])
    cost = rows[rows["metric"] == cost_metric][["run_id", "T", "step", "value"]].rename(columns={"value": "cost"})
    gain = gain.merge(cost, on=["run_id", "T", "step"], how="left")
    if gain.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    keys = ["config_id", "T", "step"]
    grouped = gain.groupby(keys, sort=True)
    out = _estimates(grouped, keys, "gain", "gain", bounds=lambda key: difference_bounds(metric_bounds(metric)))
    out = out.drop(columns=["sd"])
    cost_est = _estimates(grouped, keys, "cost", "cost", bounds=lambda key: metric_bounds(cost_metric))
    cost_est = cost_est.drop(columns=["n", "sd"])
    return out.merge(cost_est, on=keys)[GAIN_COLUMNS]


def largest_variant(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows of each configuration's largest T (the variant that holds every stage it reached)."""
    if frame.empty:
        return frame
    top = frame.groupby("config_id")["T"].transform("max")
    return frame[frame["T"] == top]


def final_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Each variant's value at its own last stage (step == T)."""
    return summary[summary["step"] == summary["T"]]


def with_configs(frame: pd.DataFrame, config_table: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each configuration's label, model, LoRA, protocol and size joined on."""
    return frame.merge(config_table[CONFIG_COLUMNS], on="config_id", how="left")


@dataclass
class Tables:
    """Everything the figures and the report draw from, computed once from a study's finished runs."""

    configs: pd.DataFrame  # one row per configuration (CONFIG_COLUMNS, seeds, n_runs)
    variants: pd.DataFrame  # one row per (run, T) with its gate outcome
    rows: pd.DataFrame  # the history per variant, steps <= T (ROW_COLUMNS)
    summary: pd.DataFrame  # mean and 95% interval per (config, T, metric, step), configuration columns joined
    passes: pd.DataFrame  # gate pass rate per (config, T), configuration columns joined

    @classmethod
    def from_frames(cls, runs: pd.DataFrame, history: pd.DataFrame) -> Tables:
        config_table = configs(runs)
        history = with_derived(history)
        variants = run_variants(runs, history)
        rows = expand(runs, history)
        order = ["params", "config_label", "T"]
        summary = with_configs(summarize(rows), config_table).sort_values([*order, "metric", "step"],
                                                                          na_position="last", kind="stable")
        passes = with_configs(pass_rates(variants), config_table).sort_values(order, na_position="last",
                                                                              kind="stable")
        return cls(config_table, variants, rows, summary.reset_index(drop=True), passes.reset_index(drop=True))

    @classmethod
    def from_study(cls, study) -> Tables:
        """From a :class:`~srscale.analysis.study.Study`'s finished runs (failed and running jobs left out)."""
        finished = study.finished
        return cls.from_frames(finished, study.history[study.history["run_id"].isin(finished["run_id"])])

    def metrics(self) -> list[str]:
        return sorted(self.summary["metric"].unique()) if not self.summary.empty else []

    def gains(self, metric: str, cost_metric: str = CUMULATIVE_FLOPS) -> pd.DataFrame:
        return with_configs(gains(self.rows, metric, cost_metric), self.configs)
