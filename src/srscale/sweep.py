"""``python -m srscale.sweep status [outputs/] [--failed]``: where each job of a sweep stands.

One line per job: state (done; disqualified, at which gate stage; failed, with its one-line reason;
running; killed; not started), iterations completed, wall time, MLflow run id and the job's
overrides. Jobs are the directories of the sweep folder (each job's ``job_state.json``,
``summary.json``, ``tracking.json`` and Hydra's ``.hydra/overrides.yaml``), plus the jobs of the
last sweep launched there (``multirun.yaml``) that have no directory yet.

``--failed`` prints only the failed and killed jobs, one line of shell-quoted overrides each, to
re-launch them one by one; re-running the whole sweep command does the same in one go, since
srscale's sweeper does not launch finished jobs again.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from srscale import jobstate

RELAUNCH_STATES = ("failed", "killed")


@dataclass(frozen=True)
class JobRow:
    overrides: tuple[str, ...]
    state: str
    detail: str | None = None  # failed: the reason; disqualified: the gate stage; running: the stage
    iterations: int | None = None
    wall_s: float | None = None
    run_id: str | None = None
    directory: str | None = None


# ---------------------------------------------------------------------------------- pure logic
def describe(state: dict, summary: dict | None, run_id: str | None, overrides: tuple[str, ...],
             iterations_on_disk: int, now: float) -> JobRow:
    """A job's row from its state record (``jobstate.read_state``), summary, run id and overrides.

    A job with a ``summary.json`` but no state record (written before job_state.json existed) is
    done or disqualified by its summary's gate outcome. Iterations come from the state record when
    the job ended, else from the iteration directories with a ``DONE.json``.
    """
    name = state.get("state", "not_started")
    if summary is not None and name in ("not_started", "running", "killed"):
        name = "done" if summary.get("gate_outcome") == "passed" else "disqualified"
    detail = None
    if name == "running":
        detail = state.get("stage")  # the stage running, when the pipeline records it
    elif name == "failed":
        detail = state.get("reason") or "(no reason recorded)"
    elif name == "disqualified":
        detail = state.get("gate_stage") or (summary or {}).get("gate_stage") or "?"
    iterations = state.get("iterations_completed")
    if iterations is None and summary is not None:
        iterations = summary.get("iterations_completed")
    if iterations is None and name != "not_started":
        iterations = iterations_on_disk
    wall = None
    started = state.get("started_at")
    if isinstance(started, (int, float)):
        end = now if name == "running" else state.get("updated_at", now)
        wall = max(0.0, float(end) - float(started))
    return JobRow(overrides=overrides, state=name, detail=detail, iterations=iterations, wall_s=wall,
                  run_id=state.get("run_id") or run_id)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def state_label(row: JobRow) -> str:
    if row.state in ("disqualified", "running") and row.detail:
        return f"{row.state}@{row.detail}"
    return "not started" if row.state == "not_started" else row.state


HEADER = f"{'STATE':<24} {'ITERS':>5}  {'WALL':>7}  {'MLFLOW RUN':<32}  OVERRIDES"


def format_row(row: JobRow) -> str:
    iters = "-" if row.iterations is None else str(row.iterations)
    line = (f"{state_label(row):<24} {iters:>5}  {format_duration(row.wall_s):>7}  {row.run_id or '-':<32}  "
            f"{' '.join(row.overrides) or '(defaults)'}")
    return f"{line}  -- {row.detail}" if row.state == "failed" else line


def relaunch_line(row: JobRow) -> str:
    """The job's overrides as shell words: ``python -m srscale <line>`` re-runs (resumes) it."""
    return " ".join(shlex.quote(o) for o in row.overrides)


def summary_line(rows: list[JobRow]) -> str:
    counts = Counter(state_label(r).split("@")[0] for r in rows)
    order = ("done", "disqualified", "failed", "killed", "running", "not started")
    parts = [f"{counts[s]} {s}" for s in order if counts[s]]
    return f"{len(rows)} jobs: {', '.join(parts) if parts else 'none'}"


def sweep_job_overrides(multirun: dict) -> list[tuple[str, ...]]:
    """Every job of the sweep a ``multirun.yaml`` describes (its sweeper params and command line)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hydra = multirun.get("hydra", {})
    params = (hydra.get("sweeper") or {}).get("params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list((hydra.get("overrides") or {}).get("task") or [])
    overrides = OverridesParser.create().parse_overrides(arguments)
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return [tuple(job) for job in jobs]


# ----------------------------------------------------------------------------------------- I/O
def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_overrides(job_dir: Path, state: dict) -> tuple[str, ...]:
    import yaml

    try:
        return tuple(str(o) for o in yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or [])
    except (OSError, yaml.YAMLError):
        text = state.get("overrides")
        return tuple(text.split(",")) if text and text != "(defaults)" else ()


def load_job(job_dir: Path, now: float) -> JobRow:
    state = jobstate.read_state(job_dir)
    summary = _read_json(job_dir / jobstate.SUMMARY_FILE)
    tracking = _read_json(job_dir / "tracking.json") or {}
    iterations = sum(1 for d in job_dir.glob("iter_*") if (d / "DONE.json").is_file())
    row = describe(state, summary, tracking.get("run_id"), _read_overrides(job_dir, state), iterations, now)
    return JobRow(**{**row.__dict__, "directory": str(job_dir)})


def is_job_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and any(
        (path / name).exists() for name in (jobstate.STATE_FILE, jobstate.SUMMARY_FILE, ".hydra"))


def sweep_status(sweep_dir: Path, now: float | None = None) -> list[JobRow]:
    """Rows for every job directory in ``sweep_dir`` and every unstarted job of its last sweep."""
    import yaml

    now = time.time() if now is None else now
    rows = [load_job(d, now) for d in sorted(sweep_dir.iterdir()) if is_job_dir(d)]
    try:
        multirun = yaml.safe_load((sweep_dir / "multirun.yaml").read_text()) or {}
    except OSError:
        multirun = {}
    if multirun:
        seen = {tuple(sorted(r.overrides)) for r in rows}
        rows += [JobRow(overrides=job, state="not_started") for job in sweep_job_overrides(multirun)
                 if tuple(sorted(job)) not in seen]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m srscale.sweep", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", help="one line per job of a sweep")
    status.add_argument("sweep_dir", nargs="?", default="outputs", help="the sweep folder (default: outputs)")
    status.add_argument("--failed", action="store_true",
                        help="print only the failed and killed jobs' overrides, one job per line")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        print(f"srscale: no sweep folder at {sweep_dir}; pass the folder a sweep wrote (hydra.sweep.dir, "
              "default outputs/)", file=sys.stderr)
        return 2
    rows = sweep_status(sweep_dir)
    if args.failed:
        for row in rows:
            if row.state in RELAUNCH_STATES:
                print(relaunch_line(row))
        return 0
    print(HEADER)
    for row in rows:
        print(format_row(row))
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
