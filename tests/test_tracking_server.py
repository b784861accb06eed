"""Parallel jobs logging into a real ``mlflow server`` (sqlite backend, local artifact root) lose
nothing and duplicate nothing: every job's MLflow metrics equal what its DONE.json files record."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest

from conftest import NO_GATE, SMALL, run_cli
from srscale import tracking_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1, started with srscale's own command, stopped after."""
    root = tmp_path_factory.mktemp("tracking")
    port = _free_port()
    mlflow_cli = str(Path(sys.executable).with_name("mlflow"))
    log = (root / "server.log").open("w")
    proc = subprocess.Popen(tracking_server.server_command(root, "127.0.0.1", port, mlflow=mlflow_cli),
                            env=tracking_server.server_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        if not tracking_server.wait_healthy(uri, timeout_s=240, is_alive=lambda: proc.poll() is None):
            raise RuntimeError(f"mlflow server did not come up: {(root / 'server.log').read_text()[-2000:]}")
        yield {"uri": uri, "root": root}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server's own session: it and its workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


EVAL_PREFIX = {"base": "base", "seed_dpo": "seed_dpo_eval"}  # every other evaluated stage logs as eval/


def expected_metrics(job_dir: Path) -> dict[tuple[str, int], float]:
    """(key, step) -> value of every metric a job's stage records (DONE.json) say were logged; an
    iteration's parts (``iter_t/<part>/``) are logged through the iteration's own record."""
    out: dict[tuple[str, int], float] = {}

    def put(key: str, step: int, value) -> None:
        if isinstance(value, (bool, int, float)):
            out[(key, int(step))] = float(value)

    def put_all(prefix: str, step: int, values: dict) -> None:
        for k, v in values.items():
            put(f"{prefix}/{k}", step, v)

    for path in sorted(job_dir.rglob("DONE.json")):
        rec = json.loads(path.read_text())
        parts = path.parent.relative_to(job_dir).parts
        if parts == ("data",):
            put_all("data", 0, rec["counts"])
        elif parts == ("sft",):
            put_all("sft", 0, {k: rec[k] for k in ("steps", "runtime_s", "examples", "rows_truncated")})
            for step, v in rec["loss_curve"]:
                put("sft/loss", step, v)
            put_all("cost/sft", 0, rec["cost"])
        elif parts == ("probe",):
            put_all("gate/probe", 0, {"parse_rate": rec["parse_rate"], "longest_streak": rec["gate"]["longest_streak"],
                                      "judgments": rec["gate"]["total"], "tripped": int(rec["tripped"]),
                                      "truncated_rate": rec["truncated_rate"]})
            put_all("cost/probe", 0, rec["cost"])
        elif len(parts) == 1 and parts[0].startswith("iter_"):
            t = int(parts[0].split("_")[1])
            put_all("iter", t, rec["metrics"])
            put_all("cost/iter", t, rec["cost"])
        elif len(parts) == 2 and parts[0].startswith("iter_"):
            continue  # a part of iteration t: its metrics and cost are in iter_t/DONE.json
        elif len(parts) == 2 and parts[0] == "eval":
            prefix = EVAL_PREFIX.get(parts[1], "eval")
            put_all(prefix, rec["step"], rec["metrics"])
            put_all(f"cost/{prefix}", rec["step"], rec["cost"])
        else:
            raise AssertionError(f"a stage this check does not know: {path}")
    return out


def derived_cost_points(job_dir: Path) -> set[tuple[str, int]]:
    """The job's aggregated cost points: cost/cumulative at each iteration, cost/total at the last."""
    summary = json.loads((job_dir / "summary.json").read_text())
    last = summary["iterations_completed"]
    points = {(f"cost/cumulative/{k}", t) for k in ("flops", "wall_s") for t in range(1, last + 1)}
    if last == 0:
        points |= {("cost/cumulative/flops", 0), ("cost/cumulative/wall_s", 0)}
    return points | {(f"cost/total/{k}", last) for k, v in summary["cost"].items() if v is not None}


def logged_metrics(client, run_id: str) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    values = {}
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            counts[(key, m.step)] += 1
            values[(key, m.step)] = m.value
    return counts, values


def test_server_command_keeps_the_store_in_the_sweep_folder(tmp_path: Path) -> None:
    cmd = tracking_server.server_command(tmp_path / "outputs", "0.0.0.0", 5001, allowed_hosts="node*:5001")
    assert cmd[:2] == ["mlflow", "server"]
    args = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert args == {"--host": "0.0.0.0", "--port": "5001", "--workers": "1",
                    "--backend-store-uri": f"sqlite:///{(tmp_path / 'outputs').resolve()}/mlflow.db",
                    "--artifacts-destination": str((tmp_path / "outputs").resolve() / "mlartifacts"),
                    "--allowed-hosts": "node*:5001"}
    assert tracking_server.server_env({"A": "1"}) == {"A": "1", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    assert tracking_server.client_uri("127.0.0.1", 5001) == "http://127.0.0.1:5001"
    assert tracking_server.client_uri("0.0.0.0", 5001) == f"http://{socket.getfqdn()}:5001"


@pytest.mark.slow
def test_four_parallel_jobs_lose_no_metric_on_a_tracking_server(server, tmp_path: Path, env: dict) -> None:
    uri = server["uri"]
    out = run_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=4", *SMALL, *NO_GATE,
                   "self_reward.iterations=1", f"tracking.tracking_uri={uri}", "seed=1,2,3,4"],
                  tmp_path, env, timeout=1500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert not (tmp_path / "mlflow.db").exists()  # everything went through the server
    assert (server["root"] / "mlflow.db").is_file()
    client = mlflow.MlflowClient(tracking_uri=uri)
    jobdirs = sorted(p for p in (tmp_path / "outputs").iterdir() if p.is_dir())
    assert len(jobdirs) == 4
    run_ids = set()
    for jobdir in jobdirs:
        state = json.loads((jobdir / "job_state.json").read_text())
        assert state["state"] == "done" and state["tracking_uri"] == uri
        (run_id,) = json.loads((jobdir / "tracking.json").read_text())["runs"].values()
        run_ids.add(run_id)
        assert client.get_run(run_id).info.status == "FINISHED"
        expected = expected_metrics(jobdir)
        counts, values = logged_metrics(client, run_id)
        assert {"sft/loss", "gate/probe/parse_rate", "iter/candidates", "eval/task/accuracy"} <= {k for k, _ in expected}
        duplicates = {k: n for k, n in counts.items() if n > 1}
        assert not duplicates, duplicates
        want = set(expected) | derived_cost_points(jobdir)
        assert set(counts) == want, (want - set(counts), set(counts) - want)
        wrong = {k: (values[k], v) for k, v in expected.items() if abs(values[k] - v) > 1e-6 * max(1.0, abs(v))}
        assert not wrong, wrong  # each job's values are its own (no run got another job's metrics)
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert "summary.json" in artifacts
    assert len(run_ids) == 4
