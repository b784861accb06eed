"""The analysis on a store a real tiny sweep wrote: two seeds of one configuration through the CLI, then
the report command and the notebook in analysis/, executed top to bottom by nbclient."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import NO_GATE, SMALL, merged, run_cli, store
from srscale import analysis

REPO = Path(__file__).resolve().parents[1]
EXPERIMENT = "analysis"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, env: dict) -> str:
    cwd = tmp_path_factory.mktemp("sweep")
    args = ["-m", "seed=0,1", *merged(SMALL, NO_GATE, ["self_reward.iterations=1", f"tracking.experiment={EXPERIMENT}"])]
    out = run_cli(args, cwd, env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return store(cwd)


@pytest.mark.slow
def test_seeds_of_a_real_sweep_group_into_one_configuration(sweep: str) -> None:
    study = analysis.load_study(sweep, EXPERIMENT)
    tables = analysis.Tables.from_study(study)
    assert len(study.finished) == 2
    (config,) = tables.configs.itertuples(index=False)
    assert config.seeds == (0, 1) and config.model == "tiny_300k" and config.params > 100_000
    (gate,) = tables.passes.itertuples(index=False)
    assert (gate.T, gate.n, gate.passed) == (1, 2, 2)
    acc = tables.summary[tables.summary["metric"] == "eval/task/accuracy"]
    assert sorted(acc["step"]) == [0, 1] and set(acc["n"]) == {2}
    assert acc["low"].notna().all() and (acc["low"] <= acc["mean"]).all()  # two seeds: a real interval
    failures = tables.summary[tables.summary["metric"] == "iter/parse_failure_rate"]
    assert failures["step"].tolist() == [1]


@pytest.mark.slow
def test_report_command_on_the_sweep(sweep: str, tmp_path: Path, env: dict) -> None:
    out = subprocess.run([sys.executable, "-m", "srscale.analysis", "report", "--experiment", EXPERIMENT,
                          "--out", str(tmp_path / "report"), "--tracking-uri", sweep],
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "logged to MLflow run" in out.stdout
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| tiny_300k\\|full |" in md and "| 2 / 2 | 1.00 [0.34, 1.00] |" in md
    assert (tmp_path / "report" / "task_accuracy.png").exists()


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_against_the_sweep(sweep: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbclient
    import nbformat

    monkeypatch.setenv("SRSCALE_TRACKING_URI", sweep)
    monkeypatch.setenv("SRSCALE_EXPERIMENT", EXPERIMENT)
    # the kernel imports this checkout's package, whatever is installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    for path in sorted((REPO / "analysis").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}}).execute()
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"]
        pngs = [o for o in outputs if "image/png" in o.get("data", {})]
        assert pngs, f"{path.name} drew no figure"
        tables = "".join(o["data"].get("text/plain", "") for o in outputs if o.output_type == "execute_result")
        assert "tiny_300k|full" in tables
