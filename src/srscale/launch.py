"""Start a training stage in several processes (``train.distributed``) and wait for it.

The job's process writes the stage's :class:`~srscale.train_stage.TrainSpec` to ``spec.json`` and
runs ``torchrun`` (DDP) or ``accelerate launch --config_file ...`` (FSDP, DeepSpeed ZeRO-3) on
:mod:`srscale.train_worker`; every worker trains, the main one saves the model and ``result.json``.
The workers' output goes to the terminal as the job's own would.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
from pathlib import Path

from srscale.config import DistributedConfig
from srscale.errors import SrscaleError
from srscale.package_files import ACCELERATE_DIR
from srscale.train_stage import TrainSpec, result_from_dict
from srscale.training import TrainResult

log = logging.getLogger(__name__)


def accelerate_config_path(value: str) -> Path:
    """A config file path, or the name of one in ``conf/accelerate/`` (``fsdp``, ``deepspeed_zero3``)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    named = ACCELERATE_DIR / f"{value}.yaml"
    if "/" not in value and named.is_file():
        return named
    known = ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
    raise SrscaleError(f"train.distributed.accelerate_config={value}: no such file; give a path to an "
                       f"accelerate config or one of: {known}")


def check(dist: DistributedConfig) -> None:
    """Fail at start, not at the first training stage, on a config that cannot launch."""
    if dist.accelerate_config is not None:
        accelerate_config_path(dist.accelerate_config)
        if dist.num_processes < 2:
            raise SrscaleError("train.distributed.accelerate_config is set but train.distributed.num_processes="
                               f"{dist.num_processes}; set it to the number of GPUs (>= 2)")


def launch_command(spec_path: Path, dist: DistributedConfig) -> list[str]:
    """The command that runs the worker on ``spec_path`` in ``dist.num_processes`` processes (pure)."""
    worker = ["-m", "srscale.train_worker", str(spec_path)]
    if dist.accelerate_config:
        return [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(accelerate_config_path(dist.accelerate_config)),
                "--num_processes", str(dist.num_processes), *worker]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(dist.num_processes), *worker]


def free_accelerator_memory() -> None:
    """Release what the job's process holds on the GPUs before the workers need them."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_distributed(spec: TrainSpec, dist: DistributedConfig) -> TrainResult:
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = out / "spec.json", out / "result.json"
    spec_path.write_text(spec.to_json())
    result_path.unlink(missing_ok=True)
    cmd = launch_command(spec_path, dist)
    free_accelerator_memory()
    log.info("training %s in %d processes: %s", spec.kind, dist.num_processes, " ".join(cmd))
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0 or not result_path.exists():
        raise SrscaleError(f"{spec.prefix if spec.kind == 'dpo' else 'sft'}: the {dist.num_processes}-process "
                           f"training exited with status {proc.returncode} (its output is above); "
                           f"rerun it alone with: {' '.join(cmd)}")
    return result_from_dict(json.loads(result_path.read_text()))


def is_sharded(dist: DistributedConfig) -> bool:
    """True when the accelerate config shards the weights (FSDP or DeepSpeed): then each worker leaves
    its copy on the CPU for the trainer to shard, instead of moving it to its GPU first."""
    if not dist.accelerate_config or dist.num_processes < 2:
        return False
    import yaml

    raw = yaml.safe_load(accelerate_config_path(dist.accelerate_config).read_text()) or {}
    return str(raw.get("distributed_type", "")).upper() in ("FSDP", "DEEPSPEED")
