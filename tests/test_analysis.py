"""The analysis layer reads a real MLflow store back, and the notebook in analysis/ runs against it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import pytest

from srscale import analysis
from srscale.config import TrackingConfig
from srscale.tracking import ensure_store, make_tracker

matplotlib.use("Agg")

REPO = Path(__file__).resolve().parents[1]

# (model, params, gate outcome, task accuracy per stage 0..2 or None when disqualified)
JOBS = [("tiny_300k", 240_000, "disqualified", None),
        ("tiny_1m", 1_240_000, "passed", [0.05, 0.06, 0.08]),
        ("tiny_4m", 4_500_000, "passed", [0.20, 0.25, 0.31])]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store with one run per job, written through srscale's own tracker, as a sweep would."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    cfg = TrackingConfig(tracking_uri=uri, experiment="srscale")
    ensure_store(cfg)
    for model, n_params, outcome, acc in JOBS:
        tr = make_tracker(cfg, run_name=f"{model}|sweep")
        tr.log_params({"model.name": model, "lora.name": "full"})
        tr.set_tags({"model_params": n_params, "gate_outcome": outcome,
                     "gate_stage": "probe" if outcome == "disqualified" else None})
        for step, value in enumerate(acc or []):
            tr.log_metrics({"eval/task/accuracy": value, "eval/rm/pairwise_accuracy": value / 2}, step=step)
            if step:
                tr.log_metrics({"iter/parse_failure_rate": 0.1 / step, "iter/judge_checker_agreement": value,
                                "iter/chosen_len_mean": 10.0 + step, "iter/valid_pairs": 20}, step=step)
        tr.end("FINISHED")
    return uri


def test_runs_table_has_one_row_per_job_with_latest_metrics(study: str) -> None:
    table = analysis.runs_table(study, "srscale").set_index("model")
    assert sorted(table.index) == ["tiny_1m", "tiny_300k", "tiny_4m"]
    assert table.loc["tiny_4m", "params"] == 4_500_000 and table.loc["tiny_4m", "eval/task/accuracy"] == 0.31
    assert table.loc["tiny_300k", "gate_outcome"] == "disqualified"
    assert table.loc["tiny_300k", "gate_stage"] == "probe"


def test_iteration_table_is_the_full_history(study: str) -> None:
    table = analysis.runs_table(study, "srscale")
    rid = table.set_index("model").loc["tiny_1m", "run_id"]
    long = analysis.iteration_table(study, [rid], ["eval/task/accuracy", "iter/valid_pairs"])
    acc = long[long["metric"] == "eval/task/accuracy"].sort_values("step")
    assert acc["step"].tolist() == [0, 1, 2] and acc["value"].tolist() == [0.05, 0.06, 0.08]
    assert long[long["metric"] == "iter/valid_pairs"]["step"].tolist() == [1, 2]


def test_plot_scaling_marks_disqualified_models(study: str) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    analysis.plot_scaling(analysis.runs_table(study, "srscale"), "eval/task/accuracy", ax=ax)
    passed, disqualified = ax.collections
    assert sorted(map(tuple, passed.get_offsets().tolist())) == [(1_240_000, 0.08), (4_500_000, 0.31)]
    assert disqualified.get_offsets().tolist() == [[240_000, 0.08]]  # at the floor of the passed ones
    assert ax.get_xscale() == "log"
    plt.close(fig)


def test_save_report_writes_csv_and_figure(study: str, tmp_path: Path) -> None:
    out = analysis.save_report(study, "srscale", tmp_path / "report")
    assert (out / "runs.csv").read_text().count("\n") == 4
    assert (out / "scaling.png").stat().st_size > 10_000


def test_notebook_runs_against_a_store(study: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every code cell of analysis/scaling.ipynb, in order, as Jupyter would run it."""
    import matplotlib.pyplot as plt

    monkeypatch.setenv("MLFLOW_TRACKING_URI", study)
    notebook = json.loads((REPO / "analysis" / "scaling.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"] if c["cell_type"] == "code"]
    assert cells
    namespace: dict = {}
    before = set(plt.get_fignums())
    for source in cells:
        exec(compile(source, "scaling.ipynb", "exec"), namespace)  # noqa: S102 - the project's own notebook
    assert len(namespace["table"]) == len(JOBS)
    assert set(plt.get_fignums()) - before, "the notebook drew no figure"
    plt.close("all")
    assert os.environ["MLFLOW_TRACKING_URI"] == study
