"""How a sweep's outcome gets back to ``python -m srscale -m`` whatever launcher ran its jobs.

joblib and submitit run jobs in other processes, so a job cannot append to a list in the launching
process. Each job's outcome comes back in its Hydra ``JobReturn`` instead: a user error returns
:class:`JobFailed` (one line), any other exception comes back as a failed ``JobReturn``, and a job
that died (killed, out of memory) comes back from srscale's submitit launchers as a failed
``JobReturn`` too. srscale's sweeper (``hydra/sweeper=srscale``) turns each into one line with
:func:`failure_line` and :func:`record_failure`; ``__main__`` prints them with :func:`take_failures`
and exits 2.

Also here: :func:`check_launcher`, the one-line error for a launcher preset whose plugin is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Failures recorded by the sweeper in this process, read once by __main__ at the end of a sweep.
_FAILURES: list[str] = []


@dataclass(frozen=True)
class JobFailed:
    """A job's return value when it stopped on a user error (bad value, missing model or data)."""

    reason: str


def first_line(text: str, limit: int = 500) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]


def failure_line(overrides: Sequence[str] | None, status: str, value: Any) -> str | None:
    """``<overrides>: <why>`` for a failed job, or None for one that finished (done or disqualified).

    ``status`` is the JobReturn's status name (``COMPLETED``, ``FAILED``); ``value`` its return value
    (a :class:`JobFailed`, or the exception of a failed job).
    """
    label = ",".join(overrides or []) or "(defaults)"
    if status == "COMPLETED":
        return f"{label}: {value.reason}" if isinstance(value, JobFailed) else None
    if isinstance(value, BaseException):
        from srscale.errors import SrscaleError

        why = str(value) if isinstance(value, SrscaleError) else f"{type(value).__name__}: {value}"
        return f"{label}: {first_line(why) or type(value).__name__}"
    return f"{label}: job ended with status {status}"


def record_failure(line: str) -> None:
    _FAILURES.append(line)


def take_failures() -> list[str]:
    """The failure lines recorded since the last call (and forget them)."""
    lines = list(_FAILURES)
    _FAILURES.clear()
    return lines


# ------------------------------------------------------------------------------ launcher presets
# preset name -> (module its plugin provides, how to get it); None: not supported, with the reason.
LAUNCHER_PLUGINS: dict[str, tuple[str, str] | None] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}
RAY_UNSUPPORTED = ("hydra/launcher=ray is not supported: hydra-ray-launcher (1.2.2, the latest) requires "
                   "cloudpickle<3 and the pinned stack's joblib 1.6 requires cloudpickle>=3; use "
                   "hydra/launcher=submitit_slurm or joblib (README, \"Sweeps on a cluster\")")


def check_launcher(argv: Sequence[str]) -> str | None:
    """One line when ``hydra/launcher=<name>`` names a preset whose plugin is not installed, else None."""
    for arg in argv:
        key, _, name = arg.partition("=")
        if key.lstrip("+~") != "hydra/launcher":
            continue
        if name.startswith("ray"):
            return f"srscale: {RAY_UNSUPPORTED}"
        plugin = LAUNCHER_PLUGINS.get(name)
        if plugin and importlib.util.find_spec(plugin[0]) is None:
            return (f"srscale: hydra/launcher={name} needs {plugin[1]}: pip install -c constraints.txt "
                    "-e \".[cluster]\"")
    return None
