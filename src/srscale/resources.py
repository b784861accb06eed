"""What one job may use: torch threads on a shared CPU, and what it asks a cluster for.

Pure functions decide (thread counts, a job's submitit parameters, grouping jobs by those
parameters); :func:`apply_torch_threads` and :func:`configure_job_threads` are the side-effecting
edges, called once at the start of a job.

Threads. Jobs that run side by side on one machine (``hydra/launcher=joblib``, ``submitit_local``)
share its cores; a CPU oversubscribed by torch's thread pools made generation 10-20x slower here, so
each job takes ``cores // parallel_jobs`` threads unless ``generation.torch_threads`` says otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Set by srscale's submitit_local launcher in each job's environment: jobs started together on this
# machine (submitit's local executor starts every job of a launch at once).
PARALLEL_JOBS_ENV = "SRSCALE_PARALLEL_JOBS"
# Thread-pool sizes that child processes (torchrun training workers, tokenizers) read at start.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

JOBLIB_TARGET = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


# ------------------------------------------------------------------------------------- threads
def available_cores(affinity: Iterable[int] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Cores this process may run on: its CPU affinity, capped by SLURM's ``SLURM_CPUS_PER_TASK``."""
    env = os.environ if env is None else env
    cores = len(set(os.sched_getaffinity(0) if affinity is None else affinity)) or 1
    slurm = env.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cores = min(cores, int(slurm))
    return cores


def joblib_workers(n_jobs: int, cores: int) -> int:
    """How many jobs joblib runs at once for ``n_jobs`` (its rule: -1 = every core, -2 = all but one)."""
    if n_jobs == 0:
        raise ValueError("joblib n_jobs=0 runs nothing; use a positive count or -1 for every core")
    return n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)


def parallel_jobs(launcher: Mapping[str, Any] | None, cores: int, env: Mapping[str, str] | None = None) -> int:
    """Jobs of this sweep that share this machine's cores with this one (1 when run alone).

    ``launcher`` is the job's ``hydra.launcher`` node as a mapping (None outside Hydra). joblib runs
    ``n_jobs`` at once; srscale's submitit_local launcher exports the count in ``SRSCALE_PARALLEL_JOBS``;
    a SLURM job has its own allocation, and the basic launcher runs one job at a time.
    """
    env = os.environ if env is None else env
    if launcher and str(launcher.get("_target_", "")) == JOBLIB_TARGET:
        return joblib_workers(int(launcher.get("n_jobs", -1)), cores)
    value = env.get(PARALLEL_JOBS_ENV, "")
    return max(1, int(value)) if value.isdigit() else 1


def decide_torch_threads(requested: int | None, cores: int, parallel: int) -> int:
    """``requested`` if set, else an equal share of ``cores`` among ``parallel`` jobs (at least 1).

    With more jobs than cores (``parallel > cores``) each job gets 1 thread and the CPU is still
    oversubscribed: the caller warns.
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"torch threads must be >= 1, got {requested}")
        return requested
    return max(1, cores // max(1, parallel))


def apply_torch_threads(threads: int) -> None:
    """Size torch's intra-op pool and the OpenMP/MKL pools of processes this job starts."""
    import torch

    torch.set_num_threads(threads)
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)


def configure_job_threads(requested: int | None) -> int:
    """Decide and apply the job's torch threads from ``generation.torch_threads`` and the launcher.

    Call once at the start of a job (``srscale.__main__.task``). Returns the thread count.
    """
    launcher = None
    try:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        if HydraConfig.initialized():
            launcher = OmegaConf.to_container(HydraConfig.get().launcher, resolve=False)
    except ImportError:  # pragma: no cover - hydra is a dependency
        pass
    cores = available_cores()
    parallel = parallel_jobs(launcher, cores)
    threads = decide_torch_threads(requested, cores, parallel)
    if threads * parallel > cores:
        log.warning("%d parallel jobs x %d torch threads > %d cores: the CPU is oversubscribed (lower "
                    "hydra.launcher.n_jobs or generation.torch_threads)", parallel, threads, cores)
    apply_torch_threads(threads)
    log.info("torch threads: %d (%d cores, %d parallel jobs)", threads, cores, parallel)
    return threads


# ----------------------------------------------------------------------------- cluster requests
# model.resources field -> submitit's generic executor parameter.
SUBMITIT_KEYS = {"gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem_gb": "mem_gb", "time_min": "timeout_min"}


def job_request(resources: Mapping[str, Any], num_processes: int, launcher_defaults: Mapping[str, Any]) -> dict:
    """One job's submitit parameters: the model preset's ``resources``, else the launcher's values.

    ``num_processes`` (``train.distributed.num_processes``) raises the GPU count, since each training
    process takes one GPU. Only the four keys of :data:`SUBMITIT_KEYS` are returned.
    """
    request = {}
    for ours, theirs in SUBMITIT_KEYS.items():
        value = resources.get(ours)
        request[theirs] = launcher_defaults.get(theirs) if value is None else value
    if num_processes > 1 and (request["gpus_per_node"] or 0) < num_processes:
        request["gpus_per_node"] = num_processes
    return request


def group_by_request(requests: list[dict]) -> list[tuple[dict, list[int]]]:
    """Jobs with the same request, as (request, job positions), in order of first appearance."""
    groups: dict[tuple, tuple[dict, list[int]]] = {}
    for position, request in enumerate(requests):
        key = tuple(sorted(request.items()))
        groups.setdefault(key, (request, []))[1].append(position)
    return list(groups.values())
