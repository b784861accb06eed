"""One process of a distributed training stage: ``python -m srscale.train_worker SPEC.json``.

Started by :mod:`srscale.launch` under ``torchrun`` or ``accelerate launch`` (which set ``RANK`` and
``WORLD_SIZE``). Every process trains; the main one (rank 0) writes ``result.json`` last, which is
what the job waits for.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python -m srscale.train_worker SPEC.json (written by srscale.launch)")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from srscale.train_stage import TrainSpec, run_spec, worker_placement, write_result

    spec = TrainSpec.from_json(Path(args[0]).read_text())
    # One process, one GPU: the trainer replicates (DDP) or shards (FSDP, ZeRO-3) the weights, so a
    # worker must not spread them over every GPU itself.
    spec.model = dataclasses.replace(spec.model, device_map=None)
    placement = worker_placement(dict(os.environ), torch.cuda.is_available(), spec.sharded)
    if placement.device_type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    result = run_spec(spec, placement)
    if int(os.environ.get("RANK", "0")) == 0:
        write_result(spec, result, processes=int(os.environ.get("WORLD_SIZE", "1")))


if __name__ == "__main__":
    main()
