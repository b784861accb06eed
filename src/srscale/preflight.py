"""Checks that stop a job in one line before anything is computed (before the model is loaded).

They need the composed, typed :class:`~srscale.config.Config` and no model. :func:`check` raises
:class:`PreflightError` (a :class:`~srscale.errors.SrscaleError`) naming the first problem and its fix:

- sizes that cannot work: ``data.sizes.probe=0`` with the gate on, ``data.sizes.seed_prompts=0``
  with iterations to run;
- a job directory, or (for the models srscale builds) a ``cache_dir``, that cannot be written;
- a tracking store MLflow cannot use: a bare path, a file store MLflow refuses, an sqlite file whose
  directory cannot be written or that is not a database, an http(s) server that does not answer within
  :data:`PROBE_TIMEOUT_S` (MLflow's own client retries for minutes), a database server that refuses
  connections, a scheme MLflow has no store for;
- a judge that cannot work: the OpenAI API without its key, ``judge=endpoint`` without ``base_url``,
  a judge server that does not answer or rejects the key;
- seed data files that are missing, empty or not valid JSON lines (naming the file and the line).

The decisions are pure functions of the config and an environment mapping; the probes (a directory,
an sqlite file, a TCP connect, one HTTP GET) are thin functions at the bottom, each bounded by a
timeout. Network probe results are remembered for the process, so the second check of the same job
(Hydra's ``on_run_start`` callback, then the task) and the jobs of a sweep cost nothing more.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from srscale.config import Config, EvalConfig, TrackingConfig
from srscale.errors import SrscaleError

PROBE_TIMEOUT_S = 3.0
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every sqlite database file

# MLflow's own tracking stores (mlflow.tracking._tracking_service.utils); plugins add more through
# the ``mlflow.tracking_store`` entry point group.
MLFLOW_SCHEMES = frozenset({"sqlite", "file", "http", "https", "postgresql", "mysql", "mssql",
                            "databricks", "databricks-uc", "uc"})
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
_TRUE = ("1", "true", "yes", "on")


class PreflightError(SrscaleError):
    """The job cannot run as configured; nothing has been computed or written."""


def check(cfg: Config, env: Mapping[str, str] | None = None) -> None:
    """Raise :class:`PreflightError` for the first problem of ``cfg`` (cheap checks first)."""
    env = os.environ if env is None else env
    problem = (sizes_problem(cfg)
               or judge_settings_problem(cfg.eval, env)
               or data_files_problem(cfg)
               or directories_problem(cfg)
               or tracking_problem(cfg.tracking, env)
               or judge_reachability_problem(cfg.eval, env))
    if problem:
        raise PreflightError(problem)


# ------------------------------------------------------------------------------------- sizes
def sizes_problem(cfg: Config) -> str | None:
    """Sizes that are valid one by one but cannot work together (pure)."""
    sizes, sr = cfg.data.sizes, cfg.self_reward
    if sizes.probe == 0 and sr.gate.enabled:
        return ("data.sizes.probe=0 but the gate is on (self_reward.gate.enabled=true): the gate judges the "
                "probe set after SFT; set data.sizes.probe > 0 (e.g. 64) or self_reward.gate.enabled=false")
    if sizes.seed_prompts == 0 and sr.iterations > 0:
        return (f"data.sizes.seed_prompts=0 but self_reward.iterations={sr.iterations}: every iteration draws "
                "its prompts from the seed prompt pool; set data.sizes.seed_prompts > 0 (e.g. 200) or "
                "self_reward.iterations=0")
    return None


# ------------------------------------------------------------------------------------- judge
@dataclass(frozen=True)
class JudgeServer:
    """The OpenAI-compatible server an MT-Bench / head-to-head judge calls."""

    base_url: str
    key_env: str
    key: str | None
    official: bool  # the OpenAI API itself (a key is required)


def judge_server(ev: EvalConfig, env: Mapping[str, str]) -> JudgeServer | None:
    """The server the evaluations will call, or None when no remote judge is used (pure)."""
    from srscale.evaluation.judges import OPENAI_BASE_URL, _is_official_openai

    mt = ev.mtbench
    if not ev.stages or not (mt.enabled or ev.head_to_head.enabled) or mt.judge not in ("openai", "endpoint"):
        return None
    base = (mt.base_url or (OPENAI_BASE_URL if mt.judge == "openai" else "")).rstrip("/")
    return JudgeServer(base, mt.api_key_env, env.get(mt.api_key_env) or None, bool(base) and _is_official_openai(base))


def judge_settings_problem(ev: EvalConfig, env: Mapping[str, str]) -> str | None:
    """A remote judge without what it needs: a base URL, or the OpenAI API's key (pure)."""
    server = judge_server(ev, env)
    if server is None:
        return None
    if not server.base_url:
        return ("eval.mtbench.judge=endpoint needs eval.mtbench.base_url=http://HOST:PORT/v1 (an OpenAI-compatible "
                "server: vLLM, TGI, Ollama, FastChat)")
    if server.official and server.key is None:
        return (f"eval={ev.name} judges with the OpenAI API ({server.base_url}) but {server.key_env} is not set: "
                f"export {server.key_env}=..., or judge offline with eval=full_local, or use eval=mtbench_endpoint "
                "eval.mtbench.base_url=http://HOST:PORT/v1")
    return None


def judge_reachability_problem(ev: EvalConfig, env: Mapping[str, str]) -> str | None:
    """Whether the judge server answers ``GET <base_url>/models`` within the probe timeout."""
    server = judge_server(ev, env)
    if server is None or not server.base_url:
        return None
    headers = (("Authorization", f"Bearer {server.key}"),) if server.key else ()
    status, reason = http_get(f"{server.base_url}/models", headers)
    setting = "eval.mtbench.base_url" if ev.mtbench.base_url else f"eval={ev.name}'s judge"
    if status is None:
        fix = ("this evaluation needs network; judge offline with eval=full_local" if server.official
               else "start the server or fix eval.mtbench.base_url")
        return f"{setting}: the judge at {server.base_url} does not answer ({reason}); {fix}"
    if status in (401, 403):
        return (f"{setting}: the judge at {server.base_url} rejected the key in {server.key_env} "
                f"(HTTP {status}); check {server.key_env}")
    return None


# ------------------------------------------------------------------------------- directories
def directories_problem(cfg: Config) -> str | None:
    """The job directory and, for a model srscale builds, ``cache_dir`` must be writable (or creatable)."""
    out = Path(cfg.output_dir)
    reason = unwritable_reason(out)
    if reason:
        return (f"the job directory {out} cannot be created ({reason}); run from a writable directory or set "
                "hydra.run.dir=/writable/path (hydra.sweep.dir for -m)")
    if cfg.model.source == "tiny":
        reason = unwritable_reason(Path(cfg.cache_dir).expanduser())
        if reason:
            return (f"cache_dir={cfg.cache_dir} cannot be written ({reason}); the model srscale builds is cached "
                    "there: set cache_dir=/writable/path or SRSCALE_CACHE")
    return None


# ----------------------------------------------------------------------------------- tracking
@dataclass(frozen=True)
class Store:
    """Where MLflow will write: what kind of store, and what a probe must look at."""

    kind: str  # none | default | sqlite | memory | file | http | database | external | bare | unknown
    uri: str | None = None
    source: str = ""  # the setting that chose it, for messages
    path: Path | None = None  # sqlite file or file-store directory
    host: str | None = None
    port: int | None = None


def tracking_store(cfg: TrackingConfig, env: Mapping[str, str]) -> Store:
    """Classify the store ``cfg`` selects (``tracking.tracking_uri``, else ``$MLFLOW_TRACKING_URI``,
    else MLflow's default in the working directory), as :mod:`srscale.tracking` resolves it (pure)."""
    if cfg.backend == "none":
        return Store("none")
    uri, source = (cfg.tracking_uri, "tracking.tracking_uri") if cfg.tracking_uri else (
        env.get("MLFLOW_TRACKING_URI") or None, "MLFLOW_TRACKING_URI")
    if not uri:
        return Store("default", source="MLflow's default store")
    head = uri.split(":", 1)[0].lower()
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if head in ("databricks", "databricks-uc", "uc"):
        return Store("external", uri, source)
    if not scheme or len(scheme) == 1:  # a path (len 1: a Windows drive letter)
        return Store("bare", uri, source, path=Path(uri).expanduser())
    base = scheme.split("+", 1)[0]
    if base == "sqlite":
        path = sqlite_path(uri)
        return Store("memory", uri, source) if path is None else Store("sqlite", uri, source, path=path)
    if base == "file":
        return Store("file", uri, source, path=Path(urllib.request.url2pathname(parsed.path)).expanduser())
    if base in ("http", "https"):
        return Store("http", uri, source, host=parsed.hostname)
    if base in DATABASE_PORTS:
        return Store("database", uri, source, host=parsed.hostname, port=parsed.port or DATABASE_PORTS[base])
    if base in MLFLOW_SCHEMES or base in _plugin_schemes():
        return Store("external", uri, source)
    return Store("unknown", uri, source)


def sqlite_path(uri: str) -> Path | None:
    """The database file of an ``sqlite://`` URI as SQLAlchemy reads it; None for an in-memory one (pure).

    ``sqlite:///mlflow.db`` is relative to the working directory, ``sqlite:////abs/mlflow.db`` absolute.
    """
    rest = uri.split("://", 1)[1] if "://" in uri else ""
    rest = rest.split("?", 1)[0]
    if not rest.startswith("/"):
        return None  # "sqlite://" (memory) or a host part SQLAlchemy ignores
    database = rest[1:]
    if database in ("", ":memory:"):
        return None
    return Path(database).expanduser()


def _suggest_sqlite(path: Path) -> str:
    target = path.absolute()
    if target.suffix not in (".db", ".sqlite", ".sqlite3"):
        target = target / "mlflow.db"
    return f"sqlite:///{target}"


def store_problem(store: Store, env: Mapping[str, str]) -> str | None:
    """Stores MLflow cannot open, decided without touching them (pure)."""
    if store.kind == "bare":
        return (f"{store.source}={store.uri} is a path, not a URI: use {_suggest_sqlite(store.path)} (a database "
                f"file) or file://{store.path.absolute()} (a file store, which MLflow opens only with "
                "MLFLOW_ALLOW_FILE_STORE=true)")
    if store.kind == "file" and env.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in _TRUE:
        return (f"{store.source}={store.uri}: MLflow refuses file stores unless MLFLOW_ALLOW_FILE_STORE=true; use "
                f"{_suggest_sqlite(store.path)} (MLflow's `mlflow migrate-filestore` converts an existing one)")
    if store.kind == "unknown":
        return (f"{store.source}={store.uri}: MLflow has no tracking store for this scheme; use "
                "sqlite:///path/mlflow.db, http(s)://host:port of an MLflow server, or a database URI "
                "(postgresql://, mysql://, mssql://)")
    return None


def tracking_problem(cfg: TrackingConfig, env: Mapping[str, str], cwd: Path | None = None) -> str | None:
    """Whether MLflow can use the store: the pure decision, then one probe of the store itself."""
    store = tracking_store(cfg, env)
    problem = store_problem(store, env)
    if problem or store.kind in ("none", "memory", "external"):
        return problem
    where = f"{store.source}={store.uri}"
    fix = "set tracking.tracking_uri=sqlite:///writable/path/mlflow.db (or tracking=none)"
    if store.kind == "default":
        reason = unwritable_reason(cwd or Path.cwd())
        return (f"MLflow's default store (sqlite:///mlflow.db in the working directory) cannot be written "
                f"({reason}); run from a writable directory or {fix}") if reason else None
    if store.kind == "sqlite":
        reason = sqlite_reason(store.path if store.path.is_absolute() else (cwd or Path.cwd()) / store.path)
        return f"{where}: {reason}; {fix}" if reason else None
    if store.kind == "file":
        reason = unwritable_reason(store.path)
        return f"{where}: the file store cannot be written ({reason}); {fix}" if reason else None
    if store.kind == "http":
        status, reason = http_get(store.uri.rstrip("/") + "/health")
        if status is None:
            return f"{where}: the tracking server does not answer ({reason}); start it (mlflow server) or {fix}"
        if status >= 500:
            return f"{where}: the tracking server answers HTTP {status}; check the server or {fix}"
        return None
    if store.kind == "database":
        reason = tcp_reason(store.host or "", store.port or 0)
        return (f"{where}: the database server {store.host}:{store.port} does not answer ({reason}); "
                f"start it or {fix}") if reason else None
    return None


@functools.lru_cache(maxsize=1)
def _plugin_schemes() -> frozenset[str]:
    try:
        return frozenset(ep.name for ep in metadata.entry_points(group="mlflow.tracking_store"))
    except Exception:  # noqa: BLE001 - broken metadata: only MLflow's own schemes count
        return frozenset()


# ------------------------------------------------------------------------------------- data
def data_files_problem(cfg: Config) -> str | None:
    """Seed data files that are missing, empty or not valid JSON (see :func:`srscale.data_sources.check_files`).

    Each JSON file is read once per process while it is unchanged (the same job is checked twice).
    """
    if cfg.data.source == "suite" or not cfg.data.data_files:
        return None
    return _data_problem(cfg.data, _stamp(cfg.data.data_files))


def _stamp(paths) -> tuple:
    """Size and modification time of every file ``paths`` names (globs expanded), to key the cache."""
    import glob

    out = []
    for p in paths:
        for path in sorted(glob.glob(os.path.expanduser(str(p)))) or [str(p)]:
            try:
                st = os.stat(path)
                out.append((path, st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((path, None, None))
    return tuple(out)


_data_checked: dict[tuple, str | None] = {}


def _data_problem(data, stamp: tuple) -> str | None:
    key = (data.source, tuple(data.data_files), stamp)
    if key not in _data_checked:
        from srscale.data_sources import check_files

        try:
            check_files(data)
            _data_checked[key] = None
        except SrscaleError as exc:
            _data_checked[key] = str(exc)
    return _data_checked[key]


# ------------------------------------------------------------------------------------ probes
def unwritable_reason(path: Path) -> str | None:
    """Why ``path`` cannot be used as a directory to write in, or None.

    A missing directory is fine when its nearest existing ancestor is a directory this process can
    write in (it will be created then). Writing is tried with an anonymous temporary file, which leaves
    nothing behind; so a read-only file system or missing permission is found whoever runs the check.
    """
    probe = path.expanduser().absolute()
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return f"{probe} is not writable: {exc.strerror or exc}"
    return None


def sqlite_reason(path: Path) -> str | None:
    """Why MLflow cannot open ``path`` as its sqlite store (MLflow creates missing directories), or None."""
    path = path.absolute()
    if not path.exists():
        reason = unwritable_reason(path.parent)
        return f"cannot create {path} ({reason})" if reason else None
    if path.is_dir():
        return f"{path} is a directory, not an sqlite file"
    try:
        with open(path, "r+b") as fh:  # opened for writing, nothing written
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    if header and header != SQLITE_HEADER:  # SQLite would reuse (overwrite) a short file
        return f"{path} is not an sqlite database (it does not start with {SQLITE_HEADER!r})"
    return None


def _bounded(fn, timeout: float):
    """``fn()`` in a daemon thread, so a hanging DNS lookup cannot hold the caller past ``timeout``."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return result[0] if result else None


def _reason(exc: BaseException, timeout: float) -> str:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, socket.gaierror):
        return "unknown host"
    text = getattr(reason, "strerror", None) or str(reason)
    return " ".join(text.split())[:120] or type(reason).__name__


@functools.lru_cache(maxsize=64)
def http_get(url: str, headers: tuple[tuple[str, str], ...] = (), timeout: float = PROBE_TIMEOUT_S
             ) -> tuple[int | None, str]:
    """``(HTTP status, "")`` when ``url`` answers a GET within ``timeout``, else ``(None, why)``.

    Any status counts as an answer (an HTTP error is the server speaking). No retries; proxies are
    taken from the environment as MLflow's and the judges' clients take them.
    """
    def get() -> tuple[int | None, str]:
        request = urllib.request.Request(url, headers=dict(headers), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, ""
        except urllib.error.HTTPError as err:
            return err.code, ""
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return None, _reason(exc, timeout)

    return _bounded(get, timeout) or (None, f"no answer within {timeout:g} s")


@functools.lru_cache(maxsize=64)
def tcp_reason(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TCP connection to ``host:port`` does not open within ``timeout``, or None when it does."""
    def connect() -> str | None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            return ""
        except OSError as exc:
            return _reason(exc, timeout)

    outcome = _bounded(connect, timeout)
    if outcome is None:  # the thread is still waiting (DNS)
        return f"no answer within {timeout:g} s"
    return outcome or None


# Hydra's own files in a job directory: its saved config and the job's log.
HYDRA_FILES_DIR = ".hydra"


def remove_unused_job_dir(path: Path) -> bool:
    """Remove ``path`` when it holds nothing but Hydra's files (``.hydra/``, ``*.log``); whether it did.

    For a job that failed before it started: Hydra creates the job directory before the task runs.
    A directory with any srscale output (a previous run's) is left exactly as it is.
    """
    try:
        entries = list(path.iterdir())
    except OSError:
        return False
    if any(not (e.name == HYDRA_FILES_DIR and e.is_dir() or e.name.endswith(".log") and e.is_file())
           for e in entries):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True
