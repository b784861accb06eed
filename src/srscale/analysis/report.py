"""The study report: PNG figures, CSV tables and a one-page ``report.md`` + ``report.html``, logged to MLflow.

:func:`build_report` writes the folder from a :class:`~srscale.analysis.study.Study` (no MLflow
writes); :func:`log_report` logs that folder as its own run of the experiment, tagged
``srscale.report=1`` so that no table counts it as a job; :func:`make_report` does both (the
``python -m srscale.analysis report`` command).
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from srscale.analysis import figures as F
from srscale.analysis.aggregate import (
    CUMULATIVE_FLOPS,
    JUDGE_OVER_CHANCE,
    Tables,
    final_rows,
    largest_variant,
)
from srscale.analysis.stats import Estimate
from srscale.analysis.study import REPORT_TAG, Study, load_study

# (metric, column title) of the per-stage table, in this order where the study has them.
KEY_METRICS = [
    (F.TASK, "task accuracy"),
    (F.JUDGE, "judge pairwise acc."),
    (F.JUDGE_CHANCE, "its chance level"),
    (JUDGE_OVER_CHANCE, "judge acc. over chance (paired)"),
    ("eval/rm/parse_rate", "judge parse rate"),
    (F.PARSE_FAILURES, "parse failures"),
    (F.CHOSEN_LEN, "chosen length"),
    (F.REJECTED_LEN, "rejected length"),
    (CUMULATIVE_FLOPS, "cumulative FLOPs"),
]

FIGURES: list[tuple[str, str, Callable[[Tables], object]]] = [
    ("gate_pass_rate", "Gate pass rate against parameters", F.pass_rate_figure),
    ("judge_accuracy", "Held-out judge pairwise accuracy against parameters, per stage",
     lambda t: F.stage_metric_figure(t, F.JUDGE, "Judge: held-out pairwise accuracy (dashed: its chance level)",
                                     reference=F.JUDGE_CHANCE)),
    ("task_accuracy", "Task accuracy against parameters, per stage",
     lambda t: F.stage_metric_figure(t, F.TASK, "Task accuracy (held-out prompts, checker-graded)")),
    ("gain_vs_compute", "Gain over SFT against cumulative compute", F.gain_figure),
    ("iterations", "Parse-failure rate and length drift per iteration", F.iteration_figure),
    ("lora_rank", "Effect of the LoRA rank", F.lora_figure),
    ("benchmarks", "MT-Bench and lm-eval against parameters", F.benchmark_figure),
]


@dataclass
class Report:
    out_dir: Path
    figures: dict[str, Path] = field(default_factory=dict)  # name -> PNG written
    missing: dict[str, str] = field(default_factory=dict)  # name -> why there is no figure
    run_id: str | None = None  # the MLflow run the folder was logged to

    @property
    def markdown(self) -> Path:
        return self.out_dir / "report.md"


# ------------------------------------------------------------------------------------ formatting
def human(x: float | None) -> str:
    """``4.5M``, ``1.1B``, ``3.2e+15`` (FLOPs), ``—`` for none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= size and abs(x) < 1e15:
            return f"{x / size:.3g}{unit}"
    return f"{x:.3g}"


def _none(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def estimate_cell(row: pd.Series | None, mean: str = "mean", low: str = "low", high: str = "high") -> str:
    if row is None:
        return "—"
    n = int(row["n"]) if "n" in row and pd.notna(row["n"]) else 0
    return Estimate(_none(row[mean]), _none(row[low]), _none(row[high]), n).format()


def _estimate_flops(row: pd.Series | None, mean="mean", low="low", high="high") -> str:
    if row is None or _none(row[mean]) is None:
        return "—"
    if _none(row[low]) is None:
        return f"{human(row[mean])} (1 seed)"
    return f"{human(row[mean])} [{human(row[low])}, {human(row[high])}]"


# ------------------------------------------------------------------------------------ tables
def pass_table(tables: Tables) -> tuple[list[str], list[list[str]]]:
    header = ["configuration", "parameters", "iterations T", "passed / seeds", "pass rate [95% CI]"]
    rows = []
    for _, r in tables.passes.sort_values(["params", "config_label", "T"], na_position="last").iterrows():
        rate = Estimate(r["rate"], r["low"], r["high"], int(r["n"]))
        rows.append([r["config_label"], human(r["params"]), str(int(r["T"])), f"{r['passed']} / {r['n']}",
                     f"{rate.mean:.2f} [{rate.low:.2f}, {rate.high:.2f}]"])
    return header, rows


def stage_table(tables: Tables) -> tuple[list[str], list[list[str]]]:
    """Mean [95% CI] of the key metrics per configuration and stage (each configuration's largest T)."""
    data = largest_variant(tables.summary)
    present = [(m, title) for m, title in KEY_METRICS if m in set(data["metric"])]
    header = ["configuration", "stage", "seeds"] + [title for _, title in present]
    rows = []
    if data.empty or not present:
        return header, rows
    index = {(r.config_id, r.step, r.metric): r for r in data.itertuples(index=False)}
    order = data[["config_id", "config_label", "params", "step"]].drop_duplicates()
    for c in order.sort_values(["params", "config_label", "step"], na_position="last").itertuples(index=False):
        cells, seeds = [], 0
        for metric, _ in present:
            r = index.get((c.config_id, c.step, metric))
            s = pd.Series(r._asdict()) if r is not None else None
            seeds = max(seeds, int(s["n"]) if s is not None else 0)
            cells.append(_estimate_flops(s) if metric == CUMULATIVE_FLOPS else estimate_cell(s))
        rows.append([c.config_label, F.stage_name(c.step), str(seeds), *cells])
    return header, rows


def variant_table(tables: Tables) -> tuple[list[str], list[list[str]]]:
    """Per configuration and iteration variant T: pass rate, final metrics, gains over SFT and their cost."""
    header = ["configuration", "T", "pass rate", "task acc. at T", "task gain over SFT", "judge acc. at T",
              "judge gain over SFT", "cumulative FLOPs at T"]
    final = final_rows(tables.summary)
    keyed = {(r.config_id, r.T, r.metric): pd.Series(r._asdict()) for r in final.itertuples(index=False)}
    gain = {m: {(r.config_id, r.T): pd.Series(r._asdict()) for r in tables.gains(m).itertuples(index=False)
                if r.step == r.T} for m in (F.TASK, F.JUDGE)}
    passes = {(r.config_id, r.T): r for r in tables.passes.itertuples(index=False)}
    rows = []
    pairs = tables.variants[["config_id", "T"]].drop_duplicates().merge(tables.configs, on="config_id")
    for c in pairs.sort_values(["params", "config_label", "T"], na_position="last").itertuples(index=False):
        key = (c.config_id, c.T)
        p = passes.get(key)
        rows.append([
            c.config_label, str(int(c.T)), f"{p.passed}/{p.n}" if p is not None else "—",
            estimate_cell(keyed.get((*key, F.TASK))),
            estimate_cell(gain[F.TASK].get(key), "gain", "gain_low", "gain_high"),
            estimate_cell(keyed.get((*key, F.JUDGE))),
            estimate_cell(gain[F.JUDGE].get(key), "gain", "gain_low", "gain_high"),
            _estimate_flops(keyed.get((*key, CUMULATIVE_FLOPS))),
        ])
    return header, rows


# ------------------------------------------------------------------------------------ rendering
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_block(kind: str, *rest) -> str:
    if kind == "h1":
        return f"# {rest[0]}"
    if kind == "h2":
        return f"## {rest[0]}"
    if kind == "p":
        return rest[0]
    if kind == "table":
        return _md_table(*rest) if rest[1] else "*(no rows)*"
    if kind == "img":
        return f"![{rest[1]}]({rest[0]})"
    if kind == "nodata":
        return f"**{rest[0]}: no figure.** {rest[1]}."
    raise ValueError(f"unknown block {kind!r}")


def _html_block(kind: str, *rest) -> str:
    e = html.escape
    if kind in ("h1", "h2", "p"):
        return f"<{kind}>{e(rest[0])}</{kind}>"
    if kind == "table":
        return _html_table(*rest) if rest[1] else "<p><em>(no rows)</em></p>"
    if kind == "img":
        return f'<figure><img src="{e(rest[0])}" alt="{e(rest[1])}"><figcaption>{e(rest[1])}</figcaption></figure>'
    if kind == "nodata":
        return f"<p><strong>{e(rest[0])}: no figure.</strong> {e(rest[1])}.</p>"
    raise ValueError(f"unknown block {kind!r}")


HTML_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;"
              "font-size:12px;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}")


def render(blocks: list[tuple], fmt: str) -> str:
    """Blocks ``("h1"|"h2"|"p", text)``, ``("table", header, rows)``, ``("img", file, caption)``,
    ``("nodata", caption, reason)`` as Markdown (``fmt="md"``) or one HTML page (``"html"``)."""
    if fmt == "md":
        return "\n\n".join(_md_block(*b) for b in blocks) + "\n"
    body = "".join(_html_block(*b) for b in blocks)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>srscale report</title>"
            f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n")


# ------------------------------------------------------------------------------------ the report
def build_report(study: Study, out_dir: Path, dpi: int = 110) -> Report:
    """Write figures (PNG), tables (CSV) and ``report.md`` / ``report.html`` for ``study`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = study.finished
    tables = Tables.from_study(study)
    report = Report(out_dir)

    study.runs.drop(columns=["variants"]).assign(
        variants=study.runs["variants"].map(lambda v: ",".join(map(str, v)) if v else "")
    ).to_csv(out_dir / "runs.csv", index=False)
    tables.summary.to_csv(out_dir / "summary.csv", index=False)
    tables.passes.to_csv(out_dir / "pass_rates.csv", index=False)
    pd.concat([tables.gains(m).assign(metric=m) for m in (F.TASK, F.JUDGE)]).to_csv(out_dir / "gains.csv",
                                                                                     index=False)

    n_seeds = sorted(set(tables.configs["n_runs"].tolist())) or [0]
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}–{n_seeds[-1]}"
    blocks: list[tuple] = [
        ("h1", f"srscale study: {study.experiment}"),
        ("p", f"Store {study.tracking_uri}, experiment '{study.experiment}', written "
              f"{time.strftime('%Y-%m-%d %H:%M')}. {len(finished)} finished runs in {len(tables.configs)} "
              f"configurations ({seeds} seeds each). Intervals are "
              "95%: Student t over seeds for means (none for a single seed), Wilson for pass rates. Every "
              "metric, per configuration, iteration variant and stage: summary.csv."),
    ]
    left_out = study.runs[study.runs["status"] != "FINISHED"]
    if len(left_out):
        names = ", ".join(f"{r.run_name} ({r.status})" for r in left_out.itertuples(index=False))
        blocks.append(("p", f"Left out, not finished: {names}."))
    blocks += [("h2", "Gate"), ("table", *pass_table(tables))]
    for name, caption, draw in FIGURES:
        try:
            fig = draw(tables)
        except F.NoData as why:
            report.missing[name] = str(why)
            blocks.append(("nodata", caption, str(why)))
            continue
        path = out_dir / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        report.figures[name] = path
        blocks.append(("img", path.name, caption))
    blocks += [("h2", "Per configuration and stage (mean [95% CI])"), ("table", *stage_table(tables)),
               ("h2", "Per iteration variant: final stage, gain over SFT, cost"), ("table", *variant_table(tables))]
    (out_dir / "report.md").write_text(render(blocks, "md"), encoding="utf-8")
    (out_dir / "report.html").write_text(render(blocks, "html"), encoding="utf-8")
    return report


def log_report(report: Report, tracking_uri: str, experiment: str) -> str | None:
    """Log the report folder as a new run of ``experiment`` tagged ``srscale.report=1``; its run id."""
    from srscale.config import TrackingConfig
    from srscale.tracking import make_tracker

    tracker = make_tracker(TrackingConfig(tracking_uri=tracking_uri, experiment=experiment),
                           run_name=f"report|{time.strftime('%Y-%m-%d %H:%M')}")
    tracker.set_tags({REPORT_TAG: "1", "report_figures": ",".join(report.figures) or "none"})
    tracker.log_artifact(report.out_dir, "report")
    tracker.end("FINISHED")
    report.run_id = tracker.run_id
    return tracker.run_id


def make_report(tracking_uri: str | None, experiment: str, out_dir: Path, log: bool = True) -> Report:
    """Read the study, write the report folder and (``log``) log it to MLflow."""
    study = load_study(tracking_uri, experiment)
    report = build_report(study, out_dir)
    if log:
        log_report(report, study.tracking_uri, experiment)
    return report
