"""A job's state on disk (``<job dir>/job_state.json``), for the sweep status command.

The pipeline writes it when a job starts, after every stage (a heartbeat), and when the job ends:
``state`` is ``running``, ``done`` (gate passed, every iteration run), ``disqualified`` (the gate
tripped: a result, not a failure) or ``failed`` (with the one-line ``reason``). A job whose state
says running but whose process is gone was killed; :func:`read_state` reports it as ``killed`` when
that can be told (same host, pid not alive).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

STATE_FILE = "job_state.json"
SUMMARY_FILE = "summary.json"  # written last by the pipeline
STATES = ("running", "done", "disqualified", "failed", "killed", "not_started")


def is_finished(root: Path, iterations: int | None = None) -> bool:
    """Whether re-running the job would do nothing: its ``summary.json`` says it was disqualified,
    or that it passed with at least ``iterations`` iterations done (a job asked for more iterations
    than it ran extends in place). ``iterations=None``: any summary counts as finished."""
    try:
        summary = json.loads((Path(root) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    if iterations is None or summary.get("gate_outcome") != "passed":
        return True
    return int(summary.get("iterations_completed") or 0) >= iterations


def write_state(root: Path, state: str, **fields: Any) -> dict:
    """Merge ``fields`` into the job's state record and set ``state`` (atomic write)."""
    if state not in STATES:
        raise ValueError(f"unknown job state {state!r}")
    path = Path(root) / STATE_FILE
    record = read_raw(root) or {}
    now = time.time()
    record.setdefault("started_at", now)
    record.update(fields, state=state, updated_at=now, pid=os.getpid(), host=socket.gethostname())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    tmp.replace(path)
    return record


def read_raw(root: Path) -> dict | None:
    path = Path(root) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_state(root: Path) -> dict:
    """The job's state record; ``running`` becomes ``killed`` when its process is known to be gone."""
    record = read_raw(root)
    if record is None:
        return {"state": "not_started"}
    if (record.get("state") == "running" and record.get("host") == socket.gethostname()
            and isinstance(record.get("pid"), int) and not _alive(record["pid"])):
        record = {**record, "state": "killed"}
    return record
