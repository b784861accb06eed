"""``python -m srscale.tracking_server [DIR]``: an MLflow tracking server for a sweep's parallel jobs.

The local default store, a sqlite file opened by every job, is fine for jobs on one machine but not
for jobs on several nodes (sqlite over a network file system locks badly). A server is one writer:
jobs log over HTTP with ``tracking.tracking_uri=http://HOST:PORT``. This starts ``mlflow server``
with its store in ``DIR`` (default ``outputs``): ``DIR/mlflow.db`` (runs, metrics) and
``DIR/mlartifacts`` (artifacts, uploaded through the server, so nodes need no shared disk).

MLflow's server also starts a job runner (its own background jobs, several processes) that
tracking does not use; it is switched off here (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

DEFAULT_PORT = 5000


def server_command(root: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT, workers: int = 1,
                   allowed_hosts: str | None = None, mlflow: str = "mlflow") -> list[str]:
    """The ``mlflow server`` command line for a store in ``root`` (an absolute path is used)."""
    root = Path(root).resolve()
    cmd = [mlflow, "server", "--host", host, "--port", str(port), "--workers", str(workers),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "mlartifacts")]
    if allowed_hosts:
        cmd += ["--allowed-hosts", allowed_hosts]
    return cmd


def server_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    return env


def client_uri(host: str, port: int) -> str:
    """What jobs pass as ``tracking.tracking_uri``: this machine's name when the server listens on
    every interface, else the address it listens on."""
    name = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    return f"http://{name}:{port}"


def wait_healthy(uri: str, timeout_s: float, is_alive=lambda: True) -> bool:
    """Poll ``<uri>/health`` until it answers OK, the server process dies, or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and is_alive():
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srscale.tracking_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", nargs="?", default="outputs", help="where the store lives (default: outputs)")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve jobs on other nodes")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--allowed-hosts", default=None,
                        help="mlflow's Host-header allow-list; needed when jobs reach the server by a name "
                             "rather than localhost or a private IP address")
    args = parser.parse_args(argv)
    mlflow = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    cmd = server_command(root, args.host, args.port, args.workers, args.allowed_hosts, mlflow)
    print(f"srscale: tracking server for {root.resolve()}; run the sweep with "
          f"tracking.tracking_uri={client_uri(args.host, args.port)}", file=sys.stderr, flush=True)
    os.execve(cmd[0], cmd, server_env())
    return 0  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
