"""Hydra callbacks (registered under ``hydra.callbacks`` in ``conf/config.yaml``).

:class:`Preflight` runs :mod:`srscale.preflight` after Hydra composes the config and before it creates
any directory, so bad input exits 2 in one line and a re-run of an existing job leaves it untouched.
:class:`CreateStoreFirst` creates the MLflow store's schema and the experiment once, before a sweep's
jobs start: MLflow's first schema creation races when two processes (a parallel launcher's jobs) open a
fresh sqlite store at the same time.
"""

from __future__ import annotations

import copy
import os
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# srscale's sweeper (the default) expands a sweep exactly as the basic one does.
BASIC_SWEEPERS = (BASIC_SWEEPER, "hydra_plugins.srscale_plugins.sweeper.SrscaleSweeper")


def _exit_with(problem: str) -> None:
    print(f"srscale: {problem}", file=sys.stderr)
    sys.exit(2)


def _job_problem(config: DictConfig, dir_keys: tuple[str, ...]) -> str | None:
    """The first problem of one composed job config (``hydra`` node included), or None.

    ``dir_keys`` name the parts of the job directory (``hydra.run.dir``; a sweep's dir and subdir).

    Sets Hydra's global config while it checks (``${hydra:...}`` resolves through it; run_job sets it
    again itself) and puts it back. Errors other than a user error are left to the job itself.
    """
    from hydra.core.hydra_config import HydraConfig

    from srscale.config import to_typed
    from srscale.errors import SrscaleError
    from srscale.preflight import check

    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        job = copy.deepcopy(config)
        with read_write(job), open_dict(job):
            output_dir = os.path.abspath(os.path.join(*(str(OmegaConf.select(job, k)) for k in dir_keys)))
            del job["hydra"]
            job["output_dir"] = output_dir  # what run_job makes hydra.runtime.output_dir
        check(to_typed(job))
    except SrscaleError as exc:
        return str(exc)
    except Exception:  # noqa: BLE001 - not a user error: the job reports it when it runs
        return None
    finally:
        HydraConfig.instance().cfg = saved
    return None


def _sweep_problems(config: DictConfig) -> dict[str, list[str]]:
    """Each problem of a basic sweep's jobs, with the jobs (their overrides) that have it.

    Expands the sweep as Hydra's BasicSweeper does (``hydra.sweeper.params`` then the command line)
    and composes each job as its launcher will; other sweepers choose their jobs as they go, so each
    of their jobs is checked when it starts.
    """
    if OmegaConf.select(config, "hydra.sweeper._target_") not in BASIC_SWEEPERS:
        return {}
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    arguments = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(arguments)
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    problems: dict[str, list[str]] = {}
    for idx, job_overrides in enumerate(jobs):
        job = loader.load_sweep_config(config, list(job_overrides))
        with open_dict(job):
            job.hydra.job.id = job.hydra.job.num = idx
        problem = _job_problem(job, ("hydra.sweep.dir", "hydra.sweep.subdir"))
        if problem:
            problems.setdefault(problem, []).append(" ".join(job_overrides) or "(defaults)")
    return problems


class Preflight(Callback):
    """A single job: all its checks (the typed config's own and :func:`srscale.preflight.check`) in
    ``on_run_start``. A sweep, in ``on_multirun_start``: its directory, the tracking store (which
    :class:`CreateStoreFirst` opens next), then every job of a basic sweep, each distinct problem in
    one line naming the jobs that have it. Each job checks itself again as it starts."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        problem = _job_problem(config, ("hydra.run.dir",))
        if problem:
            _exit_with(problem)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from pathlib import Path

        from srscale.preflight import tracking_problem, unwritable_reason

        sweep_dir = Path(os.path.abspath(str(OmegaConf.select(config, "hydra.sweep.dir"))))
        reason = unwritable_reason(sweep_dir)
        if reason:
            _exit_with(f"the sweep directory {sweep_dir} cannot be created ({reason}); run from a writable "
                       "directory or set hydra.sweep.dir=/writable/path")
        problem = tracking_problem(_tracking(config), os.environ)
        if problem:
            _exit_with(problem)
        problems = _sweep_problems(config)
        for problem, jobs in problems.items():
            print(f"srscale: {problem} (job{'s' if len(jobs) > 1 else ''}: {'; '.join(jobs)})", file=sys.stderr)
        if problems:
            sys.exit(2)


def _tracking(config: DictConfig):
    from srscale.config import TrackingConfig

    tracking = config.get("tracking")
    if tracking is None:
        return TrackingConfig(backend="none")
    keys = ("backend", "tracking_uri", "experiment")  # the rest of TrackingConfig is not needed here
    return TrackingConfig(**{k: tracking[k] for k in keys if k in tracking})


class CreateStoreFirst(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from srscale.tracking import ensure_store

        ensure_store(_tracking(config))
