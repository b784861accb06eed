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
    from srscale.train_stage import TrainSpec, run_spec, write_result

    spec = TrainSpec.from_json(Path(args[0]).read_text())
    # The trainer places (DDP) or shards (FSDP, ZeRO-3) the weights; one process must not spread them.
    spec.model = dataclasses.replace(spec.model, device_map=None)
    result = run_spec(spec, device=None)
    if int(os.environ.get("RANK", "0")) == 0:
        write_result(spec, result, processes=int(os.environ.get("WORLD_SIZE", "1")))


if __name__ == "__main__":
    main()
