"""srscale's submitit launchers (``hydra/launcher=submitit_slurm|submitit_local``): per-job resources.

Hydra's submitit launcher sends every job of a sweep with one set of parameters. These subclasses
compose each job's config first, read what that job needs (``model.resources``, and
``train.distributed.num_processes`` GPUs at least; :func:`srscale.resources.job_request`), and submit
one job array per distinct request, so ``model=tinyllama,llama70b`` asks 1 GPU for each job and a job
with ``train.distributed.num_processes=8`` asks 8. A figure the preset leaves null falls back to the
launcher's (``hydra.launcher.gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``).

Requeue: submitit requeues a preempted SLURM job, and one that hits its time limit up to
``max_num_timeout`` times (the launcher's ``checkpoint`` resubmits the same job); the requeued job
re-runs the srscale job, which resumes at its last complete stage. A job that dies without a result
(killed, out of memory) comes back as a failed job instead of stopping the sweep.

Imported by Hydra's plugin discovery: without hydra-submitit-launcher installed (the ``cluster``
extra) this module defines nothing. The presets in ``conf/hydra/launcher/`` share their names with
the plugins' own configs, which Hydra merges under them as schemas, so a misspelt key fails at
start (Hydra's automatic schema matching: deprecated since 1.1 and warned about, still in the pinned
1.3.8); they set ``_target_`` to these classes.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
except ImportError:
    SlurmLauncher = None

if SlurmLauncher is not None:

    class PerJobResources:
        """Mixin for Hydra's submitit launchers: one job array per distinct resource request."""

        _EXECUTOR: str
        # Jobs of this launch started side by side on one machine (the local executor starts them
        # all at once); exported to each job for its thread count (srscale.resources).
        parallel_on_host: int = 1

        def job_requests(self, job_overrides) -> list[dict]:
            """Each job's submitit parameters, from its own composed config."""
            from srscale.resources import SUBMITIT_KEYS, job_request

            defaults = {key: self.params.get(key) for key in SUBMITIT_KEYS.values()}
            requests = []
            for overrides in job_overrides:
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
                resources = OmegaConf.to_container(cfg.model.resources, resolve=True) if "resources" in cfg.model else {}
                processes = OmegaConf.select(cfg, "train.distributed.num_processes", default=1) or 1
                requests.append(job_request(resources, int(processes), defaults))
            return requests

        def make_executor(self, request: dict):
            """A submitit executor with the launcher's parameters and one request's figures."""
            import submitit

            init_keys = {"submitit_folder", "max_num_timeout"}
            executor = submitit.AutoExecutor(
                cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]}
                if "max_num_timeout" in self.params else {})
            generic = set(OmegaConf.structured(BaseQueueConf).keys())
            params = {key if key in generic else f"{self._EXECUTOR}_{key}": value
                      for key, value in self.params.items() if key not in init_keys}
            params.update({key: value for key, value in request.items() if value is not None})
            executor.update_parameters(**params)
            return executor

        def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
            from srscale.resources import PARALLEL_JOBS_ENV

            os.environ[PARALLEL_JOBS_ENV] = str(self.parallel_on_host)
            return super().__call__(*args, **kwargs)

        def launch(self, job_overrides, initial_job_idx: int):
            from hydra.core.singleton import Singleton

            from srscale.resources import group_by_request

            assert self.config is not None and self.hydra_context is not None
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if self._EXECUTOR == "local":
                self.parallel_on_host = len(job_overrides)
            pending: list[tuple[int, Any]] = []
            for request, positions in group_by_request(self.job_requests(job_overrides)):
                executor = self.make_executor(request)
                log.info("submitit '%s': %d job(s) with %s", self._EXECUTOR, len(positions),
                         ", ".join(f"{k}={v}" for k, v in request.items()))
                args = []
                for pos in positions:
                    idx = initial_job_idx + pos
                    log.info("\t#%d : %s", idx, " ".join(filter_overrides(job_overrides[pos])))
                    args.append((list(job_overrides[pos]), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                 Singleton.get_state()))
                jobs = executor.map_array(self, *zip(*args, strict=True))
                pending.extend(zip(positions, jobs, strict=True))
            results: list[JobReturn | None] = [None] * len(job_overrides)
            for pos, job in pending:
                try:
                    results[pos] = job.results()[0]
                except Exception as exc:  # noqa: BLE001 - the job died without a result: a failed job
                    results[pos] = JobReturn(overrides=list(job_overrides[pos]), status=JobStatus.FAILED,
                                             _return_value=exc)
            return results

    class SrscaleSlurmLauncher(PerJobResources, SlurmLauncher):
        pass

    class SrscaleLocalLauncher(PerJobResources, LocalLauncher):
        pass
