"""Bad input fails at once: one line, exit 2, before any model is loaded or any directory is made.

The pure decisions of :mod:`srscale.preflight` (sizes, judge, tracking store) are tested on typed
configs; the probes on real directories, sqlite files and local HTTP servers; and every bad input
once through the real CLI (a subprocess timeout guards against a hang; nothing is timed here).
"""

from __future__ import annotations

import gzip
import http.server
import inspect
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import run_cli
from srscale.__main__ import _check_overrides
from srscale.config import (
    LR_SCHEDULERS,
    ConfigError,
    DataConfig,
    DPOConfig,
    EvalConfig,
    GateConfig,
    HeadToHeadConfig,
    MTBenchConfig,
    SelfRewardConfig,
    SFTConfig,
    SuiteSizes,
    TrackingConfig,
)
from srscale.data_sources import check_files, load_seed_data
from srscale.errors import SrscaleError
from srscale.package_files import SWEEPS_DIR
from srscale.preflight import (
    http_get,
    judge_reachability_problem,
    judge_settings_problem,
    remove_unused_job_dir,
    sizes_problem,
    sqlite_path,
    sqlite_reason,
    store_problem,
    tcp_reason,
    tracking_problem,
    tracking_store,
    unwritable_reason,
)
from srscale.seed_data import JsonlError, read_jsonl

CLI_TIMEOUT = 60  # a guard against a hang, not a timing assertion


# ------------------------------------------------------------------------------ local servers
class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.paths.append((self.path, self.headers.get("Authorization")))
        self.send_response(self.server.status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        try:
            self.wfile.write(b"OK")
        except (BrokenPipeError, ConnectionResetError):  # the probe may hang up after the status line
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator:
    """An HTTP server on a free local port answering every GET with ``server.status``."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.status, srv.paths = 200, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def closed_port() -> int:
    """A local port nobody listens on (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


# ---------------------------------------------------------------------------------- sizes
def _cfg(**kw):
    """A typed config with the defaults, ``kw`` replacing top-level sections."""
    from srscale.config import Config, JudgeConfig, ModelConfig, TinyArchConfig

    base = Config(model=ModelConfig(name="tiny", tiny=TinyArchConfig()),
                  judge=JudgeConfig(name="short", template="{prompt} {response}"), output_dir="out",
                  cache_dir="cache")
    return replace(base, **kw)


@pytest.mark.parametrize("probe,gate,seed_prompts,iterations,expect", [
    (0, True, 10, 3, "data.sizes.probe=0 but the gate is on"),
    (0, False, 10, 3, None),
    (5, True, 0, 3, "data.sizes.seed_prompts=0 but self_reward.iterations=3"),
    (5, True, 0, 0, None),
    (5, True, 10, 3, None),
])
def test_sizes_that_cannot_work_together(probe, gate, seed_prompts, iterations, expect) -> None:
    cfg = _cfg(data=DataConfig(sizes=SuiteSizes(probe=probe, seed_prompts=seed_prompts)),
               self_reward=SelfRewardConfig(iterations=iterations, gate=GateConfig(enabled=gate)))
    problem = sizes_problem(cfg)
    assert (problem is None) if expect is None else (expect in problem and "\n" not in problem)


# ---------------------------------------------------------------------------------- judge
def _eval(judge: str = "openai", mtbench: bool = True, h2h: bool = False, **mt) -> EvalConfig:
    return EvalConfig(name="full", mtbench=MTBenchConfig(enabled=mtbench, judge=judge, **mt),
                      head_to_head=HeadToHeadConfig(enabled=h2h))


@pytest.mark.parametrize("ev,env,expect", [
    (_eval(), {}, "OPENAI_API_KEY is not set"),
    (_eval(), {"OPENAI_API_KEY": "sk-x"}, None),
    (_eval(mtbench=False, h2h=True), {}, "OPENAI_API_KEY is not set"),  # head-to-head uses the same judge
    (_eval(mtbench=False), {}, None),  # no remote judge is used
    (replace(_eval(), stages=[]), {}, None),  # no stage is evaluated
    (_eval(judge="local"), {}, None),
    (_eval(judge="endpoint"), {}, "needs eval.mtbench.base_url"),
    (_eval(judge="endpoint", base_url="http://h:1/v1"), {}, None),  # the key is optional off OpenAI
    (_eval(api_key_env="MY_KEY"), {"OPENAI_API_KEY": "sk-x"}, "MY_KEY is not set"),
])
def test_judge_settings(ev: EvalConfig, env: dict, expect: str | None) -> None:
    problem = judge_settings_problem(ev, env)
    assert (problem is None) if expect is None else (expect in problem), problem


def test_judge_endpoint_must_answer(server, closed_port) -> None:
    ok = _eval(judge="endpoint", base_url=f"{server.url}/v1")
    assert judge_reachability_problem(ok, {"OPENAI_API_KEY": "k1"}) is None
    assert server.paths[-1] == ("/v1/models", "Bearer k1")
    server.status = 404  # a server without /models still answers
    assert judge_reachability_problem(_eval(judge="endpoint", base_url=f"{server.url}/a/v1"), {}) is None
    server.status = 401
    problem = judge_reachability_problem(_eval(judge="endpoint", base_url=f"{server.url}/b/v1"), {})
    assert "rejected the key in OPENAI_API_KEY (HTTP 401)" in problem
    dead = _eval(judge="endpoint", base_url=f"http://127.0.0.1:{closed_port}/v1")
    problem = judge_reachability_problem(dead, {})
    assert problem.startswith("eval.mtbench.base_url: the judge at http://127.0.0.1:")
    assert "connection refused" in problem and "start the server" in problem


# ------------------------------------------------------------------------------- tracking
@pytest.mark.parametrize("uri,env,kind,source", [
    (None, {}, "default", "MLflow's default store"),
    (None, {"MLFLOW_TRACKING_URI": "sqlite:///e.db"}, "sqlite", "MLFLOW_TRACKING_URI"),
    ("sqlite:///c.db", {"MLFLOW_TRACKING_URI": "sqlite:///e.db"}, "sqlite", "tracking.tracking_uri"),
    (None, {"MLFLOW_TRACKING_URI": ""}, "default", "MLflow's default store"),
    ("sqlite://", {}, "memory", "tracking.tracking_uri"),
    ("file:///tmp/mlruns", {}, "file", "tracking.tracking_uri"),
    ("http://h:5000", {}, "http", "tracking.tracking_uri"),
    ("https://h", {}, "http", "tracking.tracking_uri"),
    ("postgresql+psycopg2://u:p@db/mlflow", {}, "database", "tracking.tracking_uri"),
    ("databricks", {}, "external", "tracking.tracking_uri"),
    ("databricks://profile", {}, "external", "tracking.tracking_uri"),
    ("/tmp/mlruns", {}, "bare", "tracking.tracking_uri"),
    ("mlruns", {}, "bare", "tracking.tracking_uri"),
    ("C:\\mlruns", {}, "bare", "tracking.tracking_uri"),
    ("htp://h", {}, "unknown", "tracking.tracking_uri"),
])
def test_tracking_store_kind(uri, env, kind, source) -> None:
    store = tracking_store(TrackingConfig(tracking_uri=uri), env)
    assert (store.kind, store.source) == (kind, source)


def test_tracking_none_and_database_port() -> None:
    assert tracking_store(TrackingConfig(backend="none", tracking_uri="/bare"), {}).kind == "none"
    store = tracking_store(TrackingConfig(tracking_uri="postgresql+psycopg2://u:p@db/mlflow"), {})
    assert (store.host, store.port) == ("db", 5432)
    assert tracking_store(TrackingConfig(tracking_uri="mysql://db:3307/x"), {}).port == 3307


@pytest.mark.parametrize("uri", ["sqlite:///mlflow.db", "sqlite:////abs/dir/m.db", "sqlite:///~/m.db",
                                 "sqlite:///rel/dir/m.db?timeout=20", "sqlite://", "sqlite:///:memory:"])
def test_sqlite_path_reads_the_uri_as_sqlalchemy_does(uri: str) -> None:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    expect = None if database in (None, "", ":memory:") else Path(database).expanduser()
    assert sqlite_path(uri) == expect


def test_store_problems_without_touching_the_store(tmp_path: Path) -> None:
    bare = store_problem(tracking_store(TrackingConfig(tracking_uri=str(tmp_path / "mlruns")), {}), {})
    assert bare == (f"tracking.tracking_uri={tmp_path}/mlruns is a path, not a URI: use "
                    f"sqlite:///{tmp_path}/mlruns/mlflow.db (a database file) or file://{tmp_path}/mlruns "
                    "(a file store, which MLflow opens only with MLFLOW_ALLOW_FILE_STORE=true)")
    from_env = store_problem(tracking_store(TrackingConfig(), {"MLFLOW_TRACKING_URI": "x.db"}), {})
    assert from_env.startswith("MLFLOW_TRACKING_URI=x.db is a path") and "x.db (a database file)" in from_env
    file_store = tracking_store(TrackingConfig(tracking_uri=f"file://{tmp_path}"), {})
    assert "MLFLOW_ALLOW_FILE_STORE=true" in store_problem(file_store, {})
    assert store_problem(file_store, {"MLFLOW_ALLOW_FILE_STORE": "true"}) is None
    unknown = store_problem(tracking_store(TrackingConfig(tracking_uri="htp://h"), {}), {})
    assert "has no tracking store for this scheme" in unknown
    assert not any(tmp_path.iterdir())


def test_mlflow_refuses_file_stores_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    """The fact store_problem relies on, checked on the installed MLflow."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.file_store import FileStore

    with pytest.raises(MlflowException, match="MLFLOW_ALLOW_FILE_STORE"):
        FileStore(str(tmp_path / "a"))
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    FileStore(str(tmp_path / "b"))


def test_tracking_http_store_must_answer(server, closed_port, silent_port) -> None:
    assert tracking_problem(TrackingConfig(tracking_uri=server.url), {}) is None
    assert server.paths[-1][0] == "/health"
    server.status = 503
    problem = tracking_problem(TrackingConfig(tracking_uri=f"{server.url}/proxy"), {})
    assert "answers HTTP 503" in problem
    problem = tracking_problem(TrackingConfig(tracking_uri=f"http://127.0.0.1:{closed_port}"), {})
    assert "does not answer (connection refused)" in problem and "sqlite:///" in problem
    status, reason = http_get(f"http://127.0.0.1:{silent_port}/health", timeout=0.5)
    assert status is None and reason == "no answer within 0.5 s"


def test_tracking_sqlite_and_default_store(tmp_path: Path) -> None:
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    assert tracking_problem(TrackingConfig(tracking_uri=f"sqlite:///{tmp_path}/new/dir/m.db"), {}) is None
    problem = tracking_problem(TrackingConfig(tracking_uri=f"sqlite:///{a_file}/m.db"), {})
    assert f"cannot create {a_file}/m.db ({a_file} is a file, not a directory)" in problem
    problem = tracking_problem(TrackingConfig(tracking_uri=f"sqlite:///{a_file}"), {})
    assert f"{a_file} is not an sqlite database" in problem
    assert tracking_problem(TrackingConfig(), {}, cwd=tmp_path) is None
    problem = tracking_problem(TrackingConfig(), {}, cwd=a_file)
    assert problem.startswith("MLflow's default store (sqlite:///mlflow.db in the working directory) cannot")
    relative = tracking_problem(TrackingConfig(tracking_uri="sqlite:///afile"), {}, cwd=tmp_path)
    assert "is not an sqlite database" in relative
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing was created


def test_sqlite_reason_accepts_a_real_store(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "mlflow.db"
    sqlite3.connect(db).execute("create table t (x)").connection.commit()
    assert sqlite_reason(db) is None
    assert "is a directory" in sqlite_reason(tmp_path)


def test_tcp_probe(closed_port, silent_port) -> None:
    assert tcp_reason("127.0.0.1", silent_port) is None
    assert tcp_reason("127.0.0.1", closed_port) == "connection refused"


# ------------------------------------------------------------------------------ directories
def test_unwritable_reason(tmp_path: Path) -> None:
    assert unwritable_reason(tmp_path) is None
    assert unwritable_reason(tmp_path / "not" / "yet") is None
    assert not (tmp_path / "not").exists()  # checking creates nothing
    (tmp_path / "f").write_text("x")
    assert unwritable_reason(tmp_path / "f" / "sub") == f"{tmp_path / 'f'} is a file, not a directory"
    assert unwritable_reason(tmp_path / "f") == f"{tmp_path / 'f'} is a file, not a directory"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes to read-only directories")
def test_unwritable_reason_read_only(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        assert "is not writable" in unwritable_reason(locked / "job")
    finally:
        locked.chmod(0o700)


def test_remove_unused_job_dir(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "config.yaml").write_text("a: 1")
    (fresh / "__main__.log").write_text("")
    assert remove_unused_job_dir(fresh) and not fresh.exists()
    used = tmp_path / "used"
    (used / ".hydra").mkdir(parents=True)
    (used / "data").mkdir()
    assert not remove_unused_job_dir(used) and (used / "data").is_dir()
    assert not remove_unused_job_dir(tmp_path / "missing")


# ------------------------------------------------------------------------------ lr scheduler
def test_lr_schedulers_run_with_what_srscale_passes() -> None:
    """Each allowed value builds with no scheduler kwargs; each excluded transformers value either
    needs kwargs srscale does not pass or steps on an evaluation metric srscale does not compute."""
    import torch
    from transformers.optimization import get_scheduler
    from transformers.trainer_utils import SchedulerType

    known = {s.value for s in SchedulerType}
    assert set(LR_SCHEDULERS) <= known

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)

    def build(name: str):
        return get_scheduler(name, opt, num_warmup_steps=1, num_training_steps=10, scheduler_specific_kwargs={})

    for name in LR_SCHEDULERS:
        scheduler = build(name)
        opt.step()
        scheduler.step()
    for name in sorted(known - set(LR_SCHEDULERS)):
        try:
            scheduler = build(name)
        except (ValueError, TypeError):
            continue
        assert "metrics" in inspect.signature(scheduler.step).parameters, name


@pytest.mark.parametrize("schema,key", [(SFTConfig, "train.sft.lr_scheduler"), (DPOConfig, "train.dpo.lr_scheduler")])
def test_lr_scheduler_is_validated(schema, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{key}='cosin': must be one of linear, cosine, "):
        schema(lr_scheduler="cosin")
    assert schema(lr_scheduler="constant").lr_scheduler == "constant"


# ---------------------------------------------------------------------------------- jsonl
def test_read_jsonl_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n{"a": \n')
    with pytest.raises(JsonlError) as err:
        read_jsonl(path)
    assert str(err.value).startswith(f"{path} line 4: not valid JSON (Expecting value at column 7)")
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(JsonlError, match=r"x.jsonl line 2: expected a JSON object, got list '\[1, 2\]'"):
        read_jsonl(path)
    path.write_text("\n \n")
    assert read_jsonl(path) == []  # an empty split is legitimate
    with pytest.raises(JsonlError, match=r"x.jsonl is empty: expected one JSON object per line"):
        read_jsonl(path, allow_empty=False)
    with pytest.raises(JsonlError, match=r"missing.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    gz = tmp_path / "y.jsonl.gz"
    gz.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n')[:-12])  # truncated archive
    with pytest.raises(JsonlError, match=r"y.jsonl.gz.*cannot be read"):
        read_jsonl(gz)


@pytest.mark.parametrize("name,text,expect", [
    ("empty.jsonl", "", "empty.jsonl is empty: expected one JSON object per line"),
    ("blank.jsonl", "\n\n", "blank.jsonl is empty"),
    ("bad.jsonl", '{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n{"q": "e", "a": }\n', "bad.jsonl line 3: not valid JSON"),
    ("bad.json", '[\n  {"q": "a"},\n  {"q": }\n]\n', "bad.json line 3: not valid JSON"),
    ("list.json", "[]", "list.json is empty: expected a list of JSON objects"),
    ("mixed.json", '[{"q": "a"}, 3]', "item 1 of the list is int"),
])
def test_bad_data_files_are_named_with_the_line(tmp_path: Path, name: str, text: str, expect: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    cfg = DataConfig(source="jsonl", data_files=[str(path)])
    with pytest.raises(SrscaleError) as err:
        check_files(cfg)
    assert str(err.value).startswith("data=jsonl: ") and expect in str(err.value) and "\n" not in str(err.value)


def test_good_data_files_pass(tmp_path: Path, shared_data: Path) -> None:
    lines = tmp_path / "lines.json"  # JSON lines in a .json file, as datasets accepts
    lines.write_text('{"q": "a", "a": "b"}\n{"q": "c", "a": "d"}\n')
    for path in (lines, shared_data / "alpaca" / "alpaca_data.first200.json",
                 shared_data / "hh_rlhf" / "harmless-base" / "test.jsonl.gz"):
        check_files(DataConfig(source="jsonl", data_files=[str(path)]))


def test_data_check_is_remembered_until_the_file_changes(tmp_path: Path) -> None:
    from srscale.preflight import data_files_problem

    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": \n')
    cfg = _cfg(data=DataConfig(source="jsonl", data_files=[str(path)]))
    assert "d.jsonl line 1: not valid JSON" in data_files_problem(cfg)
    path.write_text('{"prompt": "a", "response": "b"}\n')
    assert data_files_problem(cfg) is None
    assert data_files_problem(_cfg()) is None  # the bundled suite reads no file


def test_corrupt_line_found_when_loading_too(tmp_path: Path) -> None:
    """Python callers that skip the preflight get the same line from the loader (datasets names none)."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"chosen": "a", "rejected": "b"}\n{"chosen": \n')
    with pytest.raises(SrscaleError) as err:
        load_seed_data(DataConfig(source="hh_rlhf", data_files=[str(path)]), "{prompt} {response}")
    assert f"{path} line 2: not valid JSON" in str(err.value)


# ------------------------------------------------------------------------- command-line options
@pytest.mark.parametrize("args", [["hydra/launcher=basic"], ["hydra/job_logging=disabled"],
                                  ["hydra/hydra_logging=none", "hydra/sweeper=basic"], ["+sweeps=tiny_ladder"],
                                  ["data.columns={prompt: q, response: a}"], ["data.columns.prompt=q"],
                                  ["-m", "lora=full,r8", "hydra/launcher=basic"]])
def test_hydra_groups_and_columns_pass_the_option_check(args: list[str]) -> None:
    assert _check_overrides(args) is None


@pytest.mark.parametrize("args,expect", [
    (["hydra/launcher=nope"], "unknown option hydra/launcher=nope; choose one of: basic"),
    (["hydra/job_logging=nope"], "choose one of: default, disabled, none, stdout"),
    (["+sweeps=nope"], "unknown option sweeps=nope; choose one of: "
                       + ", ".join(sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml")))),
    (["data.columns={prompt: q, answer: a}"], "unknown config key data.columns.answer"),
    (["model=tiny", "lora=r99"], "unknown option lora=r99"),
])
def test_option_check_names_the_problem(args: list[str], expect: str) -> None:
    problem = _check_overrides(args)
    assert problem is not None and expect in problem and "\n" not in problem


# ------------------------------------------------------------------------------- through the CLI
def _one_line(out) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2 and len(lines) == 1, f"rc={out.returncode}\n{out.stderr[-3000:]}"
    assert lines[0].startswith("srscale: ")
    return lines[0]


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("not a directory")
    return path


CASES = {
    "lr_scheduler": (["train.sft.lr_scheduler=cosin"], "train.sft.lr_scheduler='cosin': must be one of"),
    "dpo_lr_scheduler": (["train.dpo.lr_scheduler=warmup_stable_decay"], "train.dpo.lr_scheduler="),
    "cache_dir": (["cache_dir={a_file}/cache"], "cache_dir={a_file}/cache cannot be written ({a_file} is a file"),
    "job_dir": (["hydra.run.dir={a_file}/out"], "the job directory {a_file}/out cannot be created"),
    "http_store_refused": (["tracking.tracking_uri=http://127.0.0.1:{closed_port}"],
                           "the tracking server does not answer (connection refused)"),
    "http_store_hung": (["tracking.tracking_uri=http://127.0.0.1:{silent_port}"],
                        "the tracking server does not answer (no answer within 3 s)"),
    "sqlite_store": (["tracking.tracking_uri=sqlite:///{a_file}/mlflow.db"], "cannot create {a_file}/mlflow.db"),
    "bare_store": (["tracking.tracking_uri={tmp}/mlruns"], "is a path, not a URI: use sqlite:///{tmp}/mlruns/mlflow.db"),
    "openai_key": (["eval=full"], "OPENAI_API_KEY is not set"),
    "endpoint": (["eval=mtbench_endpoint", "eval.mtbench.base_url=http://127.0.0.1:{closed_port}/v1"],
                 "eval.mtbench.base_url: the judge at http://127.0.0.1:{closed_port}/v1 does not answer"),
    "endpoint_missing": (["eval=mtbench_endpoint"], "needs eval.mtbench.base_url"),
    "probe_zero": (["data.sizes.probe=0"], "data.sizes.probe=0 but the gate is on"),
    "seed_prompts_zero": (["data.sizes.seed_prompts=0"], "data.sizes.seed_prompts=0 but self_reward.iterations="),
    "empty_jsonl": (["data=jsonl", "data.data_files=[{tmp}/empty.jsonl]"], "{tmp}/empty.jsonl is empty"),
    "corrupt_jsonl": (["data=jsonl", "data.data_files=[{tmp}/bad.jsonl]"], "{tmp}/bad.jsonl line 2: not valid JSON"),
    "hydra_group": (["hydra/launcher=nope"], "unknown option hydra/launcher=nope"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_fails_in_one_line_before_anything(case: str, tmp_path: Path, env: dict, a_file: Path,
                                                     closed_port: int, silent_port: int) -> None:
    args, expect = CASES[case]
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": \n')
    fill = {"a_file": a_file, "closed_port": closed_port, "silent_port": silent_port, "tmp": tmp_path}
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    before = sorted(p.name for p in tmp_path.iterdir())
    out = run_cli([a.format(**fill) for a in args], tmp_path, env, timeout=CLI_TIMEOUT)
    line = _one_line(out)
    assert expect.format(**fill) in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no outputs/, no mlflow.db


def test_bare_path_from_the_environment(tmp_path: Path, env: dict) -> None:
    out = run_cli([], tmp_path, {**env, "MLFLOW_TRACKING_URI": "mlruns"}, timeout=CLI_TIMEOUT)
    assert _one_line(out).startswith(f"srscale: MLFLOW_TRACKING_URI=mlruns is a path, not a URI: use "
                                     f"sqlite:///{tmp_path}/mlruns/mlflow.db")


def test_rerun_of_an_existing_job_is_left_untouched(tmp_path: Path, env: dict, closed_port: int) -> None:
    """tracking.tracking_uri is not part of the job's name, so this re-runs outputs/default."""
    job = tmp_path / "outputs" / "default"
    (job / ".hydra").mkdir(parents=True)
    files = {job / ".hydra" / "config.yaml": "seed: 0\n", job / "summary.json": "{}", job / "__main__.log": "old\n"}
    for path, text in files.items():
        path.write_text(text)
    stamps = {path: path.stat().st_mtime_ns for path in files}
    out = run_cli([f"tracking.tracking_uri=http://127.0.0.1:{closed_port}"], tmp_path, env, timeout=CLI_TIMEOUT)
    assert "does not answer" in _one_line(out)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps and all(p.read_text() == t for p, t in files.items())
    assert sorted(p.name for p in job.iterdir()) == [".hydra", "__main__.log", "summary.json"]


def test_sweep_fails_before_its_first_job(tmp_path: Path, env: dict) -> None:
    env = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    out = run_cli(["-m", "lora=full,r8", "eval=full"], tmp_path, env, timeout=CLI_TIMEOUT)
    line = _one_line(out)
    assert "OPENAI_API_KEY is not set" in line and line.endswith("(jobs: lora=full eval=full; lora=r8 eval=full)")
    assert list(tmp_path.iterdir()) == []  # no sweep directory, no store


def test_readme_columns_example_composes(tmp_path: Path, env: dict) -> None:
    out = run_cli(["data=jsonl", "data.columns={prompt: q, response: a}", "--cfg", "job"], tmp_path, env,
                  timeout=CLI_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "columns:\n    prompt: q\n    response: a\n    chosen: null" in out.stdout


def test_hydra_launcher_option_runs(tmp_path: Path, env: dict) -> None:
    out = run_cli(["hydra/launcher=basic", "hydra/job_logging=disabled", "--cfg", "hydra"], tmp_path, env,
                  timeout=CLI_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert "_target_: hydra._internal.core_plugins.basic_launcher.BasicLauncher" in out.stdout
