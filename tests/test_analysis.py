"""The analysis layer on a real sqlite MLflow store holding synthetic runs named and tagged as the pipeline
does (tests/study_store.py): loading, tables, figures, the report folder, its MLflow run and the command."""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import mlflow
import pytest
from matplotlib.collections import PathCollection

from srscale import analysis
from srscale.analysis.__main__ import main
from srscale.errors import SrscaleError
from study_store import Job, stages, write_jobs

EXPERIMENT = "analysis"
T_975_2 = 4.302652729749464
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def series(base: float, slope: float, seed: int, last: int) -> list[tuple[int, float]]:
    """Stage values 0..last: base + slope * t * (1 + seed / 2) + seed / 200 (so seeds differ, and gains too)."""
    return stages([base + slope * t * (1 + 0.5 * seed) + 0.005 * seed for t in range(last + 1)])


def job(model, lora, seed, base, last=2, outcome="passed", stage=None, variants=(2,), flops=1e12):
    metrics = {
        "eval/task/accuracy": series(base, 0.02, seed, last),
        "eval/rm/pairwise_accuracy": series(base + 0.3, 0.01, seed, last),
        "eval/rm/pairwise_chance": series(base + 0.1, 0.0, seed, last),
        "iter/parse_failure_rate": stages([0.1 / t + 0.01 * seed for t in range(1, last + 1)], 1),
        "iter/chosen_len_mean": stages([20.0 + 3 * t for t in range(1, last + 1)], 1),
        "iter/rejected_len_mean": stages([18.0 + t for t in range(1, last + 1)], 1),
        "cost/cumulative/flops": stages([flops * (1 + t) * (1 + 0.1 * seed) for t in range(last + 1)]),
        "eval/mtbench/score": series(1 + 10 * base, 0.1, seed, last),
        "eval/lm_eval/arc_easy/acc": series(0.25 + base / 4, 0.005, seed, last),
        "eval/lm_eval/arc_easy/acc_stderr": series(0.02, 0.0, seed, last),
    }
    return Job(model, lora, seed, outcome, stage, variants, metrics=metrics)


def probe_failure(model, seed):
    return Job(model, "full", seed, "disqualified", "probe", (2,),
               metrics={"gate/probe/parse_rate": [(0, 0.01)], "cost/cumulative/flops": [(0, 1e10)]})


JOBS = [
    *(probe_failure("tiny_300k", s) for s in range(3)),
    job("tiny_1m", "full", 0, 0.05, flops=3e11),
    job("tiny_1m", "full", 1, 0.05, last=1, outcome="disqualified", stage="iter_2", flops=3e11),
    job("tiny_1m", "full", 2, 0.05, flops=3e11),
    *(job("tiny_4m", "full", s, 0.2) for s in range(3)),
    *(job("tiny_4m", "r16", s, 0.15, variants=(1, 2), flops=8e11) for s in range(3)),
    job("tiny_4m", "r8", 0, 0.12, flops=8e11),
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    write_jobs(uri, EXPERIMENT, JOBS)
    crashed = job("tiny_4m", "full", 9, 0.9)
    crashed.status = "FAILED"
    write_jobs(uri, EXPERIMENT, [crashed])
    return uri


@pytest.fixture(scope="module")
def study(store: str) -> analysis.Study:
    return analysis.load_study(store, EXPERIMENT)


@pytest.fixture(scope="module")
def tables(study: analysis.Study) -> analysis.Tables:
    return analysis.Tables.from_study(study)


# ------------------------------------------------------------------------------------ loading
def test_study_has_one_row_per_job_and_leaves_failed_jobs_out_of_the_tables(study, tables):
    assert len(study.runs) == len(JOBS) + 1
    assert len(study.finished) == len(JOBS)
    assert "tiny_4m|full|seed=9" in set(study.runs["run_name"])
    row = study.runs.set_index("run_name").loc["tiny_4m|r16|seed=1"]
    assert (row["config_label"], row["seed"], row["params"], row["variants"]) == ("tiny_4m|r16", 1, 4.5e6, (1, 2))
    assert tables.configs["config_label"].tolist() == ["tiny_300k|full", "tiny_1m|full", "tiny_4m|full",
                                                       "tiny_4m|r16", "tiny_4m|r8"]
    assert tables.configs.set_index("config_label").loc["tiny_4m|full", "n_runs"] == 3  # the failed run is out


def test_history_holds_every_step(study):
    rid = study.runs.set_index("run_name").loc["tiny_4m|full|seed=0", "run_id"]
    acc = study.history[(study.history["run_id"] == rid) & (study.history["metric"] == "eval/task/accuracy")]
    assert acc.sort_values("step")["value"].tolist() == pytest.approx([0.2, 0.22, 0.24])


def test_means_and_intervals_over_seeds(tables):
    s = tables.summary.set_index(["config_label", "T", "metric", "step"])
    at2 = s.loc[("tiny_4m|full", 2, "eval/task/accuracy", 2)]
    values = [0.2 + 0.04 * (1 + 0.5 * k) + 0.005 * k for k in range(3)]  # 0.24, 0.265, 0.29
    sd = math.sqrt(sum((v - 0.265) ** 2 for v in values) / 2)
    assert at2["mean"] == pytest.approx(0.265) and at2["n"] == 3
    assert at2["high"] - at2["mean"] == pytest.approx(T_975_2 * sd / math.sqrt(3))
    # tiny_1m seed 1 was disqualified in iteration 2: it counts at SFT and iteration 1, not at 2
    assert s.loc[("tiny_1m|full", 2, "eval/task/accuracy", 1), "n"] == 3
    assert s.loc[("tiny_1m|full", 2, "eval/task/accuracy", 2), "n"] == 2
    single = s.loc[("tiny_4m|r8", 2, "eval/task/accuracy", 2)]
    assert single["n"] == 1 and math.isnan(single["low"])
    # a run with variants 1,2 counts for T=1 with steps 0..1 only
    r16 = tables.summary[(tables.summary["config_label"] == "tiny_4m|r16") & (tables.summary["T"] == 1)]
    assert sorted(r16[r16["metric"] == "eval/task/accuracy"]["step"]) == [0, 1]


def test_pass_rates_over_seeds(tables):
    p = tables.passes.set_index(["config_label", "T"])
    assert (p.loc[("tiny_300k|full", 2), "passed"], p.loc[("tiny_300k|full", 2), "n"]) == (0, 3)
    assert p.loc[("tiny_1m|full", 2), "rate"] == pytest.approx(2 / 3)
    assert p.loc[("tiny_1m|full", 2), "low"] == pytest.approx(0.2077, abs=1e-4)
    assert p.loc[("tiny_4m|r16", 1), "rate"] == 1.0


def test_gains_against_cumulative_flops(tables):
    g = tables.gains("eval/task/accuracy").set_index(["config_label", "T", "step"])
    row = g.loc[("tiny_4m|full", 2, 2)]
    assert row["gain"] == pytest.approx(0.06)  # per seed 0.04, 0.06, 0.08
    assert row["gain_high"] - row["gain"] == pytest.approx(T_975_2 * 0.02 / math.sqrt(3))
    assert row["cost"] == pytest.approx(3e12 * 1.1)  # mean of 3e12 * (1, 1.1, 1.2)


# ------------------------------------------------------------------------------------ figures
def test_pass_rate_figure_is_log_x_with_wilson_bars(tables):
    fig = analysis.pass_rate_figure(tables)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    bars = {c.get_label(): c for c in ax.containers}
    assert set(bars) == {"full", "r16", "r8"}
    line, _, (bar,) = bars["full"]
    assert line.get_xdata().tolist() == [240_000, 1_240_000, 4_500_000]
    assert line.get_ydata().tolist() == pytest.approx([0.0, 2 / 3, 1.0])
    lows = sorted(seg[0][1] for seg in bar.get_segments())  # each bar runs from the Wilson low to high
    assert lows == pytest.approx([0.0, 0.2077, 0.4385], abs=1e-4)


def test_stage_figure_marks_disqualified_configurations(tables):
    fig = analysis.stage_metric_figure(tables, "eval/task/accuracy")
    full = next(ax for ax in fig.axes if ax.get_title() == "full")
    assert {ax.get_title() for ax in fig.axes} == {"full", "r16", "r8"}
    crosses = [c for c in full.collections if c.get_label() == "disqualified (every seed)"]
    assert len(crosses) == 1 and crosses[0].get_offsets()[:, 0].tolist() == [240_000]
    # tiny_1m lost a seed to the gate: its points are hollow (no face colour)
    points = [c for c in full.collections if isinstance(c, PathCollection)]
    hollow = [c for c in points if len(c.get_facecolors()) == 0]
    assert hollow and all(c.get_offsets()[:, 0].tolist() == [1_240_000] for c in hollow)
    assert full.get_xscale() == "log"


def test_judge_figure_draws_each_stages_chance_level_dashed(tables):
    fig = analysis.stage_metric_figure(tables, "eval/rm/pairwise_accuracy", reference="eval/rm/pairwise_chance")
    full = next(ax for ax in fig.axes if ax.get_title() == "full")
    dashed = {line.get_label(): line for line in full.get_lines() if line.get_linestyle() == "--"}
    assert set(dashed) == {"chance (SFT)", "chance (iter 1)", "chance (iter 2)"}
    sft = dashed["chance (SFT)"]
    # tiny_1m and tiny_4m (tiny_300k never reached SFT): chance = base + 0.1 + seed / 200, mean over seeds
    assert sft.get_xdata().tolist() == [1_240_000, 4_500_000]
    assert sft.get_ydata().tolist() == pytest.approx([0.155, 0.305])
    assert not [t.get_text() for t in full.get_xticklabels(minor=True) if t.get_text()]  # decades only


def test_gain_iteration_lora_and_benchmark_figures_draw(tables):
    gain = analysis.gain_figure(tables)
    assert [ax.get_xscale() for ax in gain.axes] == ["log", "log"]
    assert {c.get_label() for c in gain.axes[0].containers} == {"tiny_1m|full", "tiny_4m|full", "tiny_4m|r16",
                                                                "tiny_4m|r8"}
    it = analysis.iteration_figure(tables)
    assert len(it.axes) == 2
    lora = analysis.lora_figure(tables)
    assert [t.get_text() for t in lora.axes[0].get_xticklabels()] == ["8", "16", "full"]
    bench = analysis.benchmark_figure(tables)
    assert [ax.get_title() for ax in bench.axes if ax.get_visible()] == ["mtbench/score", "lm_eval/arc_easy/acc"]


def test_figures_without_data_say_why(store, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_jobs(uri, "failing", [probe_failure("tiny_300k", s) for s in range(2)])
    t = analysis.Tables.from_study(analysis.load_study(uri, "failing"))
    with pytest.raises(analysis.NoData, match="eval/task/accuracy"):
        analysis.stage_metric_figure(t, "eval/task/accuracy")
    with pytest.raises(analysis.NoData, match="lora"):
        analysis.lora_figure(t)
    with pytest.raises(analysis.NoData, match="mtbench"):
        analysis.benchmark_figure(t)
    report = analysis.build_report(analysis.load_study(uri, "failing"), tmp_path / "out")
    assert list(report.figures) == ["gate_pass_rate"]
    text = report.markdown.read_text()
    assert "**Task accuracy against parameters, per stage: no figure.** no finished run logged eval/task/accuracy" in text
    assert "| tiny_300k\\|full | 240k | 2 | 0 / 2 | 0.00 [0.00, 0.66] |" in text


def test_an_empty_experiment_gives_a_report_of_reasons(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.MlflowClient(tracking_uri=uri).create_experiment("empty")
    report = analysis.build_report(analysis.load_study(uri, "empty"), tmp_path / "out")
    assert report.figures == {} and set(report.missing) == {name for name, _, _ in analysis.FIGURES}
    text = report.markdown.read_text()
    assert "0 finished runs in 0 configurations" in text and text.count("no figure") == len(analysis.FIGURES)


def test_benchmark_metrics_pick_one_per_task():
    got = analysis.figures.benchmark_metrics(["eval/lm_eval/arc_challenge/acc_norm", "eval/lm_eval/arc_challenge/acc",
                                              "eval/lm_eval/gsm8k/exact_match.strict-match",
                                              "eval/lm_eval/gsm8k/exact_match_stderr.strict-match",
                                              "eval/mtbench/score", "eval/mtbench/turn1"])
    assert got == ["eval/mtbench/score", "eval/lm_eval/arc_challenge/acc",
                   "eval/lm_eval/gsm8k/exact_match.strict-match"]


# ------------------------------------------------------------------------------------ the report
@pytest.fixture(scope="module")
def logged_report(store, tmp_path_factory) -> tuple[Path, str, int]:
    """The report command run once on the store: (its folder, what it printed, job runs before it)."""
    before = len(analysis.load_study(store, EXPERIMENT).runs)
    out = tmp_path_factory.mktemp("report") / "r"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", "--experiment", EXPERIMENT, "--out", str(out), "--tracking-uri", store]) == 0
    return out, printed.getvalue(), before


def test_report_folder_has_figures_tables_and_one_page(logged_report):
    out, printed, _ = logged_report
    assert f"report: {out / 'report.md'} (7 figures)" in printed
    for name, _, _ in analysis.FIGURES:
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "no figure" not in md
    assert "| tiny_1m\\|full | 1.24M | 2 | 2 / 3 | 0.67 [0.21, 0.94] |" in md
    assert "| tiny_4m\\|r8 | iter 2 | 1 | 0.16 (1 seed) |" in md
    assert "Left out, not finished: tiny_4m|full|seed=9 (FAILED)." in md
    assert "![Gate pass rate against parameters](gate_pass_rate.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("<img ") == len(analysis.FIGURES) and "<table>" in html and "0.67 [0.21, 0.94]" in html
    assert {p.name for p in out.glob("*.csv")} == {"runs.csv", "summary.csv", "pass_rates.csv", "gains.csv"}
    assert "eval/lm_eval/arc_easy/acc_stderr" in (out / "summary.csv").read_text()
    assert "| its chance level | judge acc. over chance (paired) |" in md
    assert "eval/rm/pairwise_over_chance" in (out / "summary.csv").read_text()


def test_report_is_logged_as_a_run_that_tables_skip(store, logged_report):
    _, printed, before = logged_report
    client = mlflow.MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    reports = client.search_runs([exp.experiment_id], filter_string="tags.`srscale.report` = '1'")
    assert len(reports) == 1 and reports[0].info.status == "FINISHED"
    assert f"logged to MLflow run {reports[0].info.run_id}" in printed
    files = {Path(a.path).name for a in client.list_artifacts(reports[0].info.run_id, "report")}
    assert {"report.md", "report.html", "gate_pass_rate.png", "summary.csv"} <= files
    assert len(analysis.load_study(store, EXPERIMENT).runs) == before


def test_report_command_errors_are_one_line(store, tmp_path, capsys):
    missing = tmp_path / "nowhere" / "mlflow.db"
    assert main(["report", "--experiment", EXPERIMENT, "--out", str(tmp_path / "o"),
                 "--tracking-uri", f"sqlite:///{missing}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"srscale: no MLflow store at {missing}")
    assert not missing.exists() and not (tmp_path / "o").exists()
    assert main(["report", "--experiment", "nope", "--out", str(tmp_path / "o"), "--tracking-uri", store]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "experiment 'nope' not found" in err and f"{EXPERIMENT}" in err


def test_load_study_errors(tmp_path):
    with pytest.raises(SrscaleError, match="no MLflow store"):
        analysis.load_study(f"sqlite:///{tmp_path / 'none.db'}", EXPERIMENT)


def test_histogram_png_stays_importable_for_the_pipeline(tmp_path):
    path = analysis.histogram_png({"1": 3, "5": 2, "none": 4}, tmp_path / "h.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
