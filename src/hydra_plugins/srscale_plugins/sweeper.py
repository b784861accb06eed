"""``hydra/sweeper=srscale``: Hydra's basic sweeper, except that a failed job does not end the sweep.

The basic sweeper reads every job's return value after each batch and re-raises the first failure,
so one failed job stops the sweep with a traceback. This one records a line per failed job
(:mod:`srscale.multirun`) and launches the remaining batches; ``python -m srscale`` prints the lines
and exits 2 at the end. A job whose directory already holds a finished job (``summary.json``:
disqualified, or done with at least the iterations asked for) is not launched again, so re-running a sweep on a cluster re-submits only the
failed, killed and unstarted jobs instead of allocating nodes for jobs that would exit at once. Cartesian products, ``hydra.sweeper.params`` (the ``sweeps/`` files) and
``max_batch_size`` behave as in the basic sweeper, and it works with any launcher, since the outcome
of each job comes back in the ``JobReturn`` the launcher returns.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional  # noqa: UP035 - OmegaConf reads these in the schema

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class SrscaleSweeperConf:
    _target_: str = "hydra_plugins.srscale_plugins.sweeper.SrscaleSweeper"
    max_batch_size: Optional[int] = None  # noqa: UP045
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="srscale", node=SrscaleSweeperConf, provider="srscale")


class SrscaleSweeper(BasicSweeper):
    def finished(self, overrides) -> bool:
        """Whether this job's directory holds a finished job (so a cluster need not start it again)."""
        from hydra.core.hydra_config import HydraConfig

        from srscale.jobstate import is_finished

        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        # The job directory interpolates ${hydra:...}, which reads HydraConfig: set it to this job's
        # config while resolving (as a launcher does when it runs the job), then put it back.
        hydra_config = HydraConfig.instance()
        previous = hydra_config.cfg
        hydra_config.set_config(cfg)
        try:
            job_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        finally:
            hydra_config.cfg = previous
        return is_finished(job_dir, OmegaConf.select(cfg, "self_reward.iterations", default=None))

    def sweep(self, arguments: list[str]) -> Any:
        from srscale.multirun import failure_line, record_failure

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*self._parse_config(), *arguments])
        self.overrides = self.split_arguments(overrides, self.max_batch_size)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        returns = []
        first_idx = 0
        while not self.is_done():
            batch = self.get_job_batch()
            self.validate_batch_is_legal(batch)
            todo = [overrides for overrides in batch if not self.finished(overrides)]
            if len(todo) < len(batch):
                log.info("%d of %d jobs already finished (summary.json): not launched again",
                         len(batch) - len(todo), len(batch))
            batch = todo
            if not batch:
                continue
            results = self.launcher.launch(batch, initial_job_idx=first_idx)
            for job_overrides, result in zip(batch, results, strict=True):
                # JobReturn.overrides holds the task overrides (what names the job); a launcher that
                # could not run the job at all may leave it unset.
                line = failure_line(result.overrides or list(job_overrides), result.status.name,
                                    result._return_value)
                if line:
                    log.error("job failed: %s", line)
                    record_failure(line)
            first_idx += len(batch)
            returns.append(results)
        return returns
