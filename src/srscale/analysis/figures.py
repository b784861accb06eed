"""The scaling figures, drawn from :class:`srscale.analysis.aggregate.Tables` with matplotlib.

Each ``*_figure`` returns a matplotlib Figure or raises :class:`NoData` with the reason, which the report
prints in the figure's place. Conventions: parameters on a log x axis; error bars are the 95%
intervals of :mod:`srscale.analysis.stats` (none for a single seed); per stage, each configuration is
drawn at its largest iteration variant; a configuration that was disqualified on some seed is drawn
hollow and one whose every seed was disqualified with nothing to plot is a red cross on the x axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from srscale.analysis.aggregate import Tables, final_rows, largest_variant

TASK = "eval/task/accuracy"
JUDGE = "eval/rm/pairwise_accuracy"
JUDGE_CHANCE = "eval/rm/pairwise_chance"
PARSE_FAILURES = "iter/parse_failure_rate"
CHOSEN_LEN, REJECTED_LEN = "iter/chosen_len_mean", "iter/rejected_len_mean"
MTBENCH = "eval/mtbench/score"
LM_EVAL_PREFIX = "eval/lm_eval/"
LM_EVAL_PREFERRED = ("acc", "acc_norm", "exact_match", "em")


class NoData(Exception):  # noqa: N818 - reads as "raise NoData(why)"
    """A figure has nothing to draw; the message says why."""


def _figure(width: float, height: float):
    """A standalone matplotlib Figure (no pyplot state, no backend switch: files and notebooks alike)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def stage_name(step: int) -> str:
    return "SFT" if int(step) == 0 else f"iter {int(step)}"


def series_name(lora, protocol) -> str:
    """A line across model sizes: the LoRA setting, plus the protocol when it is not the default."""
    return str(lora) + (f"|{protocol}" if protocol not in (None, "default") else "")


def _yerr(frame: pd.DataFrame, mean: str = "mean", low: str = "low", high: str = "high") -> np.ndarray:
    """Asymmetric error bars; zero length where there is no interval (one seed)."""
    m = frame[mean].astype(float).to_numpy()
    lo = frame[low].astype(float).to_numpy()
    hi = frame[high].astype(float).to_numpy()
    return np.vstack([np.nan_to_num(m - lo), np.nan_to_num(hi - m)])


def _pass_rate_by_config(tables: Tables) -> dict[str, float]:
    """Pass rate at each configuration's largest T (configs with no gate outcome are absent)."""
    top = largest_variant(tables.passes)
    return dict(zip(top["config_id"], top["rate"], strict=True))


def _mark_disqualified(ax, tables: Tables, shown: set[str], configs: pd.DataFrame) -> None:
    """Red crosses on the x axis for configurations with no point drawn whose seeds all failed the gate."""
    rates = _pass_rate_by_config(tables)
    dq = configs[configs["config_id"].map(lambda c: c not in shown and rates.get(c) == 0.0)]
    dq = dq[dq["params"].notna()]
    if dq.empty:
        return
    ax.scatter(dq["params"], [0.02] * len(dq), transform=ax.get_xaxis_transform(), marker="x", color="red",
               s=60, zorder=5, label="disqualified (every seed)")
    for _, r in dq.iterrows():
        ax.annotate(str(r["model"]), (r["params"], 0.02), xycoords=ax.get_xaxis_transform(), fontsize=7,
                    color="red", xytext=(3, 4), textcoords="offset points")


def _plot_points(ax, frame: pd.DataFrame, x: str, rates: dict[str, float], label: str, color, **kw) -> None:
    """A line with error bars through ``frame`` (sorted by x); hollow markers where a seed failed the gate."""
    frame = frame.sort_values(x)
    ax.errorbar(frame[x], frame["mean"], yerr=_yerr(frame), color=color, marker=None, capsize=3, label=label, **kw)
    partial = frame["config_id"].map(lambda c: rates.get(c, 1.0) < 1.0).to_numpy()
    ax.scatter(frame[x][~partial], frame["mean"][~partial], color=color, zorder=4)
    if partial.any():
        ax.scatter(frame[x][partial], frame["mean"][partial], facecolors="none", edgecolors=color, zorder=4,
                   linewidths=1.5)


def _log_x(ax) -> None:
    """A log x axis labelled on the decades only (minor labels overlap on a range of a few decades)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())


def _params_axis(ax, tables: Tables) -> None:
    """A log parameters axis with every configuration's size in view (the disqualified crosses too),
    the same on every panel."""
    _log_x(ax)
    sizes = tables.configs["params"].dropna()
    if len(sizes):
        ax.set_xlim(sizes.min() / 1.6, sizes.max() * 1.6)
    ax.set_xlabel("parameters")


def _no_params(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    frame = frame[frame["params"].notna()]
    if frame.empty:
        raise NoData(f"no run of {what} has a model_params tag")
    return frame


# ------------------------------------------------------------------------------------ figures
def pass_rate_figure(tables: Tables):
    """Gate pass rate over seeds against parameters, one line per LoRA setting / protocol."""
    passes = largest_variant(tables.passes)
    if passes.empty:
        raise NoData("no finished run has a gate_outcome tag")
    passes = _no_params(passes, "the gate table")
    fig = _figure(6, 4)
    ax = fig.subplots()
    for name, grp in passes.groupby(passes.apply(lambda r: series_name(r["lora"], r["protocol"]), axis=1)):
        grp = grp.sort_values("params")
        ax.errorbar(grp["params"], grp["rate"], yerr=_yerr(grp, "rate"), marker="o", capsize=3, label=name)
        for _, r in grp.iterrows():
            ax.annotate(f"{r['passed']}/{r['n']}", (r["params"], r["rate"]), fontsize=7, xytext=(4, -10),
                        textcoords="offset points")
    _params_axis(ax, tables)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("gate pass rate (seeds)")
    ax.set_title("Who can judge: gate pass rate (95% Wilson interval)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def stage_metric_figure(tables: Tables, metric: str, title: str | None = None, reference: str | None = None,
                        reference_label: str = "chance"):
    """``metric`` against parameters at SFT and after each iteration; one panel per LoRA setting /
    protocol. ``reference`` (e.g. the judge's chance level) is drawn dashed per stage, in its colour."""
    refs = largest_variant(tables.summary[tables.summary["metric"] == reference]) if reference else None
    data = largest_variant(tables.summary[tables.summary["metric"] == metric])
    if data.empty:
        raise NoData(f"no finished run logged {metric}")
    data = _no_params(data, metric)
    rates = _pass_rate_by_config(tables)
    names = data.apply(lambda r: series_name(r["lora"], r["protocol"]), axis=1)
    panels = sorted(names.unique())
    config_series = tables.configs.apply(lambda r: series_name(r["lora"], r["protocol"]), axis=1)
    from matplotlib import colormaps

    fig = _figure(5.5 * len(panels), 4)
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)
    steps = sorted(data["step"].unique())
    colors = colormaps["viridis"](np.linspace(0, 0.9, max(len(steps), 1)))
    for ax, panel in zip(axes[0], panels, strict=True):
        sub = data[names == panel]
        for color, step in zip(colors, steps, strict=True):
            at = sub[sub["step"] == step]
            if not at.empty:
                _plot_points(ax, at, "params", rates, stage_name(step), color)
            ref = None if refs is None else refs[refs["config_id"].isin(at["config_id"]) & (refs["step"] == step)]
            if ref is not None and not ref.empty:
                ref = ref.sort_values("params")
                ax.plot(ref["params"], ref["mean"], color=color, ls="--", lw=1, alpha=0.8,
                        label=f"{reference_label} ({stage_name(step)})")
        _mark_disqualified(ax, tables, set(sub["config_id"]), tables.configs[config_series == panel])
        _params_axis(ax, tables)
        ax.set_title(panel, fontsize=10)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(title or metric)
    fig.tight_layout()
    return fig


def gain_figure(tables: Tables, metrics: Sequence[str] = (TASK, JUDGE)):
    """Gain over SFT (per seed, then mean and 95% interval) against cumulative FLOPs, per configuration."""
    panels = [(m, largest_variant(tables.gains(m))) for m in metrics]
    panels = [(m, g) for m, g in panels if not g.empty]
    if not panels:
        raise NoData(f"no configuration has {' or '.join(metrics)} at SFT and at a later stage")
    if all(g["cost"].isna().all() for _, g in panels):
        raise NoData("no run logged cost/cumulative/flops (runs written before cost tracking)")
    fig = _figure(6 * len(panels), 4)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (metric, g) in zip(axes[0], panels, strict=True):
        g = g[g["cost"].notna()].rename(columns={"gain": "mean", "gain_low": "low", "gain_high": "high"})
        for label, grp in g.groupby("config_label", sort=True):
            grp = grp.sort_values("step")
            ax.errorbar(grp["cost"], grp["mean"], yerr=_yerr(grp), marker="o", capsize=3, label=label)
            for _, r in grp.iterrows():
                ax.annotate(f"t={int(r['step'])}", (r["cost"], r["mean"]), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
        ax.axhline(0, color="grey", lw=0.8)
        _log_x(ax)
        ax.set_xlabel("cumulative FLOPs (SFT + probe + iterations)")
        ax.set_ylabel(f"gain over SFT: {metric}")
        ax.legend(fontsize=7)
    fig.suptitle("What the gain costs")
    fig.tight_layout()
    return fig


def iteration_figure(tables: Tables):
    """Parse-failure rate and the lengths of chosen and rejected answers per iteration, per configuration."""
    data = largest_variant(tables.summary[tables.summary["metric"].isin([PARSE_FAILURES, CHOSEN_LEN, REJECTED_LEN])])
    data = data[data["step"] >= 1]
    if data.empty:
        raise NoData("no finished run logged iter/parse_failure_rate or iter/*_len_mean (no iteration ran)")
    fig = _figure(11, 4)
    ax_fail, ax_len = fig.subplots(1, 2)
    colors = {label: f"C{i}" for i, label in enumerate(sorted(data["config_label"].unique()))}
    for (label, metric), grp in data.groupby(["config_label", "metric"], sort=True):
        grp = grp.sort_values("step")
        ax = ax_fail if metric == PARSE_FAILURES else ax_len
        style = "--" if metric == REJECTED_LEN else "-"
        ax.errorbar(grp["step"], grp["mean"], yerr=_yerr(grp), color=colors[label], ls=style, marker="o",
                    capsize=3, label=label if metric != REJECTED_LEN else "_nolegend_")
    ax_fail.set_ylabel("judge parse-failure rate")
    ax_len.set_ylabel("mean pair length (chosen solid, rejected dashed)")
    for ax in (ax_fail, ax_len):
        ax.set_xlabel("iteration")
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle("Per iteration: parse failures and length drift")
    fig.tight_layout()
    return fig


def _rank_key(rank) -> float:
    return float("inf") if rank is None or pd.isna(rank) else float(rank)


def lora_figure(tables: Tables, metrics: Sequence[str] = (TASK, JUDGE)):
    """Final-stage metrics and the gate pass rate against LoRA rank (full fine-tuning last), per model."""
    final = final_rows(largest_variant(tables.summary))
    passes = largest_variant(tables.passes)
    frames = [(m, final[final["metric"] == m]) for m in metrics] + [("gate pass rate", passes.rename(
        columns={"rate": "mean"}))]
    frames = [(m, f) for m, f in frames if not f.empty]
    groups = tables.configs.groupby(["model", "protocol"], dropna=False)["lora"].nunique()
    if groups.empty:
        raise NoData("no finished run")
    if not frames or groups.max() < 2:
        raise NoData("every model has one LoRA setting: sweep lora=full,r8,r16,... to see the rank effect")
    ranks = sorted({_rank_key(r) for r in tables.configs["lora_r"]})
    ticks = ["full" if r == float("inf") else str(int(r)) for r in ranks]
    fig = _figure(5 * len(frames), 4)
    axes = fig.subplots(1, len(frames), squeeze=False)
    for ax, (metric, frame) in zip(axes[0], frames, strict=True):
        frame = frame.assign(x=frame["lora_r"].map(lambda r: ranks.index(_rank_key(r))))
        for (model, protocol), grp in frame.groupby(["model", "protocol"], dropna=False, sort=True):
            grp = grp.sort_values("x")
            ax.errorbar(grp["x"], grp["mean"], yerr=_yerr(grp), marker="o", capsize=3, label=series_name(model, protocol))
        ax.set_xticks(range(len(ranks)), ticks)
        ax.set_xlabel("LoRA rank")
        ax.set_ylabel(metric)
        ax.legend(fontsize=7)
    fig.suptitle("LoRA rank (final stage of each configuration)")
    fig.tight_layout()
    return fig


def benchmark_metrics(metrics: Sequence[str]) -> list[str]:
    """MT-Bench's score and one metric per lm-eval task (acc, else acc_norm, exact_match, em, else the first)."""
    chosen = [MTBENCH] if MTBENCH in metrics else []
    tasks: dict[str, list[str]] = {}
    for m in metrics:
        if m.startswith(LM_EVAL_PREFIX) and "stderr" not in m and m.count("/") == 3:
            task, name = m[len(LM_EVAL_PREFIX):].split("/")
            tasks.setdefault(task, []).append(name)
    for task, names in sorted(tasks.items()):
        pick = next((p for p in LM_EVAL_PREFERRED if p in names), sorted(names)[0])
        chosen.append(f"{LM_EVAL_PREFIX}{task}/{pick}")
    return chosen


def benchmark_figure(tables: Tables):
    """MT-Bench and lm-eval scores against parameters at SFT and at the final stage."""
    metrics = benchmark_metrics(tables.metrics())
    if not metrics:
        raise NoData("no run logged eval/mtbench/score or eval/lm_eval/* (eval=fast runs neither)")
    data = largest_variant(tables.summary[tables.summary["metric"].isin(metrics)])
    data = _no_params(data, "the benchmarks")
    data = data[(data["step"] == 0) | (data["step"] == data["T"])]
    rates = _pass_rate_by_config(tables)
    cols = min(len(metrics), 4)
    rows = -(-len(metrics) // cols)
    fig = _figure(4.5 * cols, 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        sub = data[data["metric"] == metric]
        sub = sub.assign(series=sub.apply(lambda r: series_name(r["lora"], r["protocol"]), axis=1),
                         final=sub["step"] > 0)
        colors = {name: f"C{i}" for i, name in enumerate(sorted(sub["series"].unique()))}
        for (series, final), grp in sub.groupby(["series", "final"], sort=True):
            _plot_points(ax, grp, "params", rates, f"{series} {'final' if final else 'SFT'}", colors[series],
                         ls="-" if final else ":")
        _params_axis(ax, tables)
        ax.set_title(metric.removeprefix("eval/"), fontsize=9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    fig.suptitle("Benchmarks: SFT and final stage")
    fig.tight_layout()
    return fig


def histogram_png(hist: dict[str, int], path, title: str = "self-assigned scores"):
    """A bar chart of a score histogram (``pairs.score_histogram`` output; ``none`` = failed parses)."""
    keys = sorted((k for k in hist if k != "none"), key=float) + (["none"] if "none" in hist else [])
    fig = _figure(5, 3)
    ax = fig.subplots()
    ax.bar(keys, [hist[k] for k in keys],
           color=["tab:blue"] * (len(keys) - ("none" in hist)) + ["tab:red"] * ("none" in hist))
    ax.set_xlabel("score (none = unparseable)")
    ax.set_ylabel("judgments")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
