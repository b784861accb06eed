"""Read a study back from MLflow and answer the scaling question: seeds aggregated with 95% intervals,
the gate pass rate, gains over SFT against compute, the scaling figures, and a one-page report.

Layers (each importable on its own): :mod:`.study` reads the store, :mod:`.stats` and
:mod:`.aggregate` are pure, :mod:`.figures` draws, :mod:`.report` writes the folder and logs it;
``python -m srscale.analysis report`` is the command. The notebooks in ``analysis/`` call these.
"""

from __future__ import annotations

from srscale.analysis.aggregate import Tables, gains, largest_variant, pass_rates, summarize, variant_outcome
from srscale.analysis.figures import (
    NoData,
    benchmark_figure,
    gain_figure,
    histogram_png,
    iteration_figure,
    lora_figure,
    pass_rate_figure,
    stage_metric_figure,
)
from srscale.analysis.report import FIGURES, Report, build_report, log_report, make_report
from srscale.analysis.stats import Estimate, mean_ci, wilson
from srscale.analysis.study import REPORT_TAG, Study, load_study

__all__ = [
    "FIGURES", "REPORT_TAG", "Estimate", "NoData", "Report", "Study", "Tables", "benchmark_figure", "build_report",
    "gain_figure", "gains", "histogram_png", "iteration_figure", "largest_variant", "load_study", "log_report", "lora_figure",
    "make_report", "mean_ci", "pass_rate_figure", "pass_rates", "stage_metric_figure", "summarize",
    "variant_outcome", "wilson",
]
