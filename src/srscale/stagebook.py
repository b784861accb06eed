"""Stage bookkeeping below the orchestrator and the evaluations: completion records, output checks,
job-relative paths, what a stage cost, and metrics logged exactly once per run.

A stage directory is complete when its ``DONE.json`` exists, parses, and every output it lists is
intact: each listed jsonl file holds exactly the recorded number of valid JSON lines, each listed model
directory has its config and weights. Anything less (a kill mid-write, a truncated copy, a damaged
model) makes :func:`stage_record` return None, so the stage is redone instead of feeding a later stage
bad data. A record also names the records it was computed from (``inputs``, by their ``uid``); when one
of those was redone, the dependent record is stale and is redone too.

Paths inside records are relative to the job directory, so a copied or moved job directory resumes
from its own weights.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srscale.seed_data import write_json

log = logging.getLogger(__name__)

DONE = "DONE.json"
LOGGED = "LOGGED"
MODEL_CONFIGS = ("config.json", "adapter_config.json")
MODEL_WEIGHTS = (".safetensors", ".bin")
KILL_AT_STAGE = "SRSCALE_KILL_AT_STAGE"  # fault injection: see Job.heartbeat


# ------------------------------------------------------------------------------ output checks (pure-ish)
def count_jsonl(path: Path) -> int | None:
    """Valid JSON lines in ``path``; None when the file is missing or any line does not parse."""
    try:
        with path.open() as fh:
            n = 0
            for line in fh:
                if line.strip():
                    json.loads(line)
                    n += 1
            return n
    except (OSError, ValueError):
        return None


def model_dir_ok(path: Path) -> bool:
    """A saved model or adapter: a config file and at least one non-empty weights file."""
    if not path.is_dir() or not any((path / c).is_file() for c in MODEL_CONFIGS):
        return False
    return any(p.suffix in MODEL_WEIGHTS and p.stat().st_size > 0 for p in path.iterdir() if p.is_file())


def output_problem(directory: Path, record: dict) -> str | None:
    """Why a stage's recorded outputs are not intact (one line), or None."""
    for name, expected in (record.get("outputs") or {}).items():
        got = count_jsonl(directory / name)
        if got is None:
            return f"{name} is missing or unreadable"
        if got != expected:
            return f"{name} has {got} of {expected} lines"
    for name in record.get("models") or []:
        if not model_dir_ok(directory / name):
            return f"the model in {name}/ is missing or damaged"
    return None


def counts_of(directory: Path, files: Iterable[str]) -> dict[str, int]:
    """The line counts to record for ``files`` (jsonl) just written in ``directory``."""
    out = {}
    for name in files:
        n = count_jsonl(directory / name)
        if n is None:
            raise RuntimeError(f"{directory / name} was just written but does not read back")
        out[name] = n
    return out


# ---------------------------------------------------------------------------------- records
def stage_record(directory: Path, inputs: Sequence[dict | None] = ()) -> dict | None:
    """The stage's completion record when the stage is complete and current, else None.

    ``inputs``: the records this stage was computed from, as they are now; if any of them is not the
    one the stage recorded (it was redone), the stage is stale.
    """
    path = directory / DONE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s is unreadable; redoing the stage", path)
        return None
    problem = output_problem(directory, record)
    if problem is None:
        expected = [r.get("uid") for r in inputs if r is not None]
        if expected and record.get("inputs") != expected:
            problem = "an earlier stage it depends on was redone"
    if problem:
        log.warning("stage %s is incomplete (%s); redoing it", directory.name, problem)
        path.unlink(missing_ok=True)
        (directory / LOGGED).unlink(missing_ok=True)
        return None
    return record


def mark_done(directory: Path, record: dict, *, outputs: Iterable[str] = (), models: Iterable[str] = (),
              inputs: Sequence[dict | None] = ()) -> dict:
    """Write the stage's ``DONE.json`` (atomically): ``record`` plus its outputs' counts and a uid."""
    directory.mkdir(parents=True, exist_ok=True)
    record = {**record, "uid": uuid.uuid4().hex, "outputs": counts_of(directory, outputs),
              "models": list(models), "inputs": [r.get("uid") for r in inputs if r is not None]}
    write_json(directory / DONE, record)
    return record


def rel(root: Path, path: Path | str | None) -> str | None:
    """``path`` relative to the job directory (for records); None stays None."""
    if path is None:
        return None
    p = Path(path)
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)  # outside the job (a hub model, a user's path): kept as given


def resolve(root: Path, path: str | None) -> Path | None:
    """A path from a record, back to a real path under ``root``."""
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else root / p


# ---------------------------------------------------------------------------------------- cost
@dataclass
class Cost:
    """What one stage cost. FLOPs: 6·params per trained token, 2·params per token fed or generated
    (the usual dense-transformer estimate; LoRA's backward is cheaper, so it is an upper bound there)."""

    wall_s: float = 0.0
    gen_prompt_tokens: int = 0
    gen_new_tokens: int = 0
    train_tokens: int = 0
    flops: float = 0.0
    peak_mem_mb: float | None = None

    def add_generation(self, tokens, params: int) -> None:
        """Add a :class:`srscale.sampling.TokenCount`."""
        self.gen_prompt_tokens += tokens.prompt
        self.gen_new_tokens += tokens.new
        self.flops += 2.0 * params * (tokens.prompt + tokens.new)

    def add_training(self, tokens: int, params: int, reference_forward: bool = False) -> None:
        """``tokens`` trained on (all epochs); DPO's reference model adds a forward pass over them."""
        self.train_tokens += tokens
        self.flops += (6.0 + (2.0 if reference_forward else 0.0)) * params * tokens

    def to_dict(self) -> dict[str, float | None]:
        return asdict(self)

    @staticmethod
    def total(costs: Iterable[dict]) -> dict[str, float | None]:
        out: dict[str, float | None] = {k: 0.0 for k in asdict(Cost())}
        peaks = []
        for c in costs:
            for k, v in c.items():
                if k == "peak_mem_mb":
                    if v is not None:
                        peaks.append(v)
                elif v is not None:
                    out[k] = (out[k] or 0.0) + v
        out["peak_mem_mb"] = max(peaks) if peaks else None
        return out


def _reset_peak_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    except Exception:  # noqa: BLE001 - accounting must never break a stage
        pass
    try:  # Linux: reset the process's peak resident set size (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    """Peak accelerator memory since the last reset (CUDA), else the process's peak RSS."""
    try:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda.max_memory_allocated() / 2**20
    except Exception:  # noqa: BLE001
        pass
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except Exception:  # noqa: BLE001
        return None


@contextmanager
def measure(cost: Cost):
    """Time a stage into ``cost`` and record its peak memory."""
    _reset_peak_memory()
    start = time.monotonic()
    try:
        yield cost
    finally:
        cost.wall_s += time.monotonic() - start
        peak = peak_memory_mb()
        cost.peak_mem_mb = peak if cost.peak_mem_mb is None or peak is None else max(peak, cost.peak_mem_mb)


# ------------------------------------------------------------------------------------ the job
@dataclass
class Job:
    """Paths and tracker of one job, with metrics logged once per MLflow run."""

    cfg: Any
    root: Path
    tracker: Any
    costs: dict[str, dict] = field(default_factory=dict)  # stage name -> Cost dict, in stage order
    records: dict[str, dict] = field(default_factory=dict)  # stage name -> its DONE record (this run)

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def heartbeat(self, stage: str) -> None:
        """Record that ``stage`` is starting. ``$SRSCALE_KILL_AT_STAGE=<stage>`` makes the process
        SIGKILL itself right after this record (a preemption at a known point, for resume tests)."""
        from srscale import jobstate

        jobstate.write_state(self.root, "running", stage=stage)
        if os.environ.get(KILL_AT_STAGE) == stage:
            os.kill(os.getpid(), signal.SIGKILL)

    def log_points(self, metrics: dict[str, Any], step: int) -> None:
        """Log ``metrics`` at ``step``, skipping any (key, step) the run already holds."""
        if getattr(self.tracker, "run_id", None) is None:
            return
        values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v == v}
        existing = self.tracker.logged_steps(list(values))
        fresh = {k: v for k, v in values.items() if step not in existing.get(k, set())}
        if fresh:
            self.tracker.log_metrics(fresh, step=step)

    def log_once(self, directory: Path, metrics: dict[str, Any], step: int,
                 series: dict[str, list[tuple[int, float]]] | None = None,
                 artifacts: list[tuple[Path, str]] | None = None) -> None:
        """Log a finished stage's metrics (and curves, artifacts) to this run, exactly once.

        ``LOGGED`` holds the run ids the stage was logged to. A job killed after logging but before
        the marker was written would log again on resume; so before logging, the points this run
        already holds for the same (key, step) are skipped.
        """
        marker = directory / LOGGED
        run_id = getattr(self.tracker, "run_id", None)
        done = _logged_runs(marker)
        if run_id is None or run_id in done:
            return
        points: dict[str, list[tuple[int, float]]] = {}
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
                points.setdefault(k, []).append((step, float(v)))
            elif isinstance(v, bool):
                points.setdefault(k, []).append((step, float(v)))
        for k, pts in (series or {}).items():
            points.setdefault(k, []).extend((int(s), float(v)) for s, v in pts)
        existing = self.tracker.logged_steps(list(points))
        by_step: dict[int, dict[str, float]] = {}
        for k, pts in points.items():
            seen = existing.get(k, set())
            for s, v in pts:
                if s not in seen:
                    by_step.setdefault(s, {})[k] = v
                    seen = seen | {s}
        for s, values in sorted(by_step.items()):
            self.tracker.log_metrics(values, step=s)
        for path, dest in artifacts or []:
            self.tracker.log_artifact(path, dest)
        marker.write_text(json.dumps(sorted(done | {run_id})))


def _logged_runs(marker: Path) -> set[str]:
    if not marker.exists():
        return set()
    try:
        value = json.loads(marker.read_text())
    except ValueError:
        return set()
    return set(value) if isinstance(value, list) else set()

