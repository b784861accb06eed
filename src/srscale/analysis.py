"""Read a study back from MLflow and draw the scaling plots (the notebooks in analysis/ call these).

``runs_table`` gives one row per job (model, size, gate outcome, final metrics); ``iteration_table``
one row per job × iteration for any ``iter/*`` or ``eval/*`` metric; ``plot_scaling`` draws a metric
against parameter count, disqualified models marked. Only reads; never writes to the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from srscale.tracking import find_runs, metric_history

SUMMARY_TAGS = ("model_id", "model_params", "gate_outcome", "gate_stage", "gate_longest_streak")


def runs_table(tracking_uri: str, experiment: str = "srscale") -> pd.DataFrame:
    """One row per run: name, status, the summary tags, key params and every latest metric."""
    rows = []
    for run in find_runs(tracking_uri, experiment):
        tags, params = run.data.tags, run.data.params
        row = {"run_id": run.info.run_id, "run_name": run.info.run_name, "status": run.info.status,
               "model": params.get("model.name"), "lora": params.get("lora.name"),
               "params": float(tags["model_params"]) if tags.get("model_params") else None}
        row.update({t: tags.get(t) for t in SUMMARY_TAGS if t not in ("model_params",)})
        row.update(run.data.metrics)
        rows.append(row)
    return pd.DataFrame(rows)


def iteration_table(tracking_uri: str, run_ids: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Long table (run_id, metric, step, value) of each metric's full history."""
    rows = [{"run_id": rid, "metric": key, "step": step, "value": value}
            for rid in run_ids for key in metrics for step, value in metric_history(tracking_uri, rid, key)]
    return pd.DataFrame(rows, columns=["run_id", "metric", "step", "value"])


def plot_scaling(table: pd.DataFrame, metric: str, ax=None, label_col: str = "model"):
    """``metric`` against parameter count (log x); disqualified models drawn as crosses at the bottom."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    ok = table[(table["gate_outcome"] == "passed") & table[metric].notna()] if metric in table else table.iloc[:0]
    bad = table[table["gate_outcome"] == "disqualified"]
    ax.scatter(ok["params"], ok[metric], label="passed the gate")
    if len(bad):
        floor = ok[metric].min() if len(ok) else 0.0
        ax.scatter(bad["params"], [floor] * len(bad), marker="x", color="red", label="disqualified by the gate")
    for _, r in pd.concat([ok, bad]).iterrows():
        ax.annotate(str(r[label_col]), (r["params"], r.get(metric) if r["gate_outcome"] == "passed" else floor),
                    fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(metric)
    ax.legend()
    return ax


def plot_iterations(long: pd.DataFrame, metric: str, names: dict[str, str] | None = None, ax=None):
    """One line per run: ``metric`` against the iteration."""
    import matplotlib.pyplot as plt

    ax = ax or plt.gca()
    for rid, grp in long[long["metric"] == metric].groupby("run_id"):
        grp = grp.sort_values("step")
        ax.plot(grp["step"], grp["value"], marker="o", label=(names or {}).get(rid, rid[:8]))
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return ax


def save_report(tracking_uri: str, experiment: str, out_dir: Path, metric: str = "eval/task/accuracy") -> Path:
    """Draw the standard figures of a study to ``out_dir`` (PNG) and return the folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    table = runs_table(tracking_uri, experiment)
    table.to_csv(out_dir / "runs.csv", index=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    plot_scaling(table, metric, ax=axes[0])
    long = iteration_table(tracking_uri, table["run_id"].tolist(), ["iter/parse_failure_rate"])
    plot_iterations(long, "iter/parse_failure_rate", dict(zip(table["run_id"], table["run_name"], strict=True)), ax=axes[1])
    fig.tight_layout()
    fig.savefig(out_dir / "scaling.png", dpi=120)
    plt.close(fig)
    return out_dir


def histogram_png(hist: dict[str, int], path: Path, title: str = "self-assigned scores") -> Path:
    """A bar chart of a score histogram (``pairs.score_histogram`` output; ``none`` = failed parses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted((k for k in hist if k != "none"), key=float) + (["none"] if "none" in hist else [])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(keys, [hist[k] for k in keys], color=["tab:blue"] * (len(keys) - ("none" in hist)) + ["tab:red"] * ("none" in hist))
    ax.set_xlabel("score (none = unparseable)")
    ax.set_ylabel("judgments")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
