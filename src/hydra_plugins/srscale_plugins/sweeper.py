"""``hydra/sweeper=srscale``: Hydra's basic sweeper, except that a failed job does not end the sweep.

The basic sweeper reads every job's return value after each batch and re-raises the first failure,
so one failed job stops the sweep with a traceback. This one records a line per failed job
(:mod:`srscale.multirun`) and launches the remaining batches; ``python -m srscale`` prints the lines
and exits 2 at the end. Cartesian products, ``hydra.sweeper.params`` (the ``sweeps/`` files) and
``max_batch_size`` behave as in the basic sweeper, and it works with any launcher, since the outcome
of each job comes back in the ``JobReturn`` the launcher returns.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


@dataclass
class SrscaleSweeperConf:
    _target_: str = "hydra_plugins.srscale_plugins.sweeper.SrscaleSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Dict[str, str]] = None


ConfigStore.instance().store(group="hydra/sweeper", name="srscale", node=SrscaleSweeperConf, provider="srscale")


class SrscaleSweeper(BasicSweeper):
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
