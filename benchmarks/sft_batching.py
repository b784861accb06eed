"""SFT batching on the default run's SFT stage: which of TRL's batching options is fastest, and correct.

Variants (each a fresh copy of the default base model, trained by ``srscale.training.sft`` on the
default IFT+EFT rows shuffled as the pipeline shuffles them; only ``SFTConfig``'s batching arguments
differ):

- ``kind``: padded batches of IFT rows or EFT rows, random within the kind (srscale's default,
  ``train.sft.batching=kind``);
- ``group_by_length``: padded batches of similar length (``train.sft.batching=length``);
- ``random``: padded batches in random order (what grouping buys);
- ``padding_free``: each batch flattened into one sequence with per-example ``position_ids``, no
  padding (TRL needs ``max_length=None`` for it without packing);
- ``packing``: TRL's best-fit-decreasing packing into ``max_length`` rows (padding-free inside). It
  changes what a step is (rows hold several examples, so fewer, larger steps at the same batch size).

Before timing, a correctness check: one batch's loss with padding-free flattening must equal its
padded loss (the model sees the examples separately either way).

    PYTHONPATH=src python benchmarks/sft_batching.py --repeats 2 --epochs 1 [--save-m1 DIR]

Variants run interleaved (ABCD ABCD ...) so that machine load hits them alike; the table prints the
median time per variant and the ratio to the first variant named.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from default_job import base_model_path, default_config, default_data, load  # noqa: E402

# name -> (train.sft.batching, extra trl.SFTConfig arguments)
VARIANTS = {
    "kind": ("kind", dict(packing=False, padding_free=False)),
    "group_by_length": ("length", dict(packing=False, padding_free=False)),
    "random": ("random", dict(packing=False, padding_free=False)),
    "padding_free": ("random", dict(packing=False, padding_free=True, max_length=None)),
    "packing": ("random", dict(packing=True, padding_free=False)),
}


class batching:
    """Within the block, ``trl.SFTConfig(...)`` gets ``overrides`` on top of srscale's arguments."""

    def __init__(self, overrides: dict):
        self.overrides = overrides

    def __enter__(self):
        import trl

        self.original = original = trl.SFTConfig
        trl.SFTConfig = lambda **kw: original(**{**kw, **self.overrides})

    def __exit__(self, *exc):
        import trl

        trl.SFTConfig = self.original


def sft_rows(cfg) -> list[dict]:
    data = default_data(cfg)
    rows = ([{**r, "kind": "ift"} for r in data.ift]
            + [{"prompt": r["prompt"], "response": r["response"], "kind": "eft"} for r in data.eft])
    random.Random(cfg.seed).shuffle(rows)
    return rows


def padding_free_loss_check(cfg, rows: list[dict], n: int = 8) -> tuple[float, float]:
    """(padded loss, padding-free loss) of the first ``n`` rows as one batch, through TRL's own
    tokenization and collators."""
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from srscale.training import _to_chat

    model, tok = load(cfg)
    model.eval()
    tok.padding_side = "right"
    from datasets import Dataset

    data = Dataset.from_list(_to_chat([{"prompt": r["prompt"], "completion": r["response"]} for r in rows[:n]],
                                      ("completion",)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=tmp, report_to="none", use_cpu=True,
                                                         max_length=cfg.model.max_length),
                             train_dataset=data, processing_class=tok)
        examples = [trainer.train_dataset[i] for i in range(n)]
    examples = [{k: e[k] for k in ("input_ids", "labels") if k in e} for e in examples]
    assert "labels" in examples[0], "TRL no longer folds the completion mask into labels: update this check"
    losses = []
    with torch.no_grad():
        for free in (False, True):
            batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id, padding_free=free)(examples)
            losses.append(float(model(**batch).loss))
    return losses[0], losses[1]


def run_variant(cfg, rows, name: str, epochs: float, out: Path) -> dict:
    from srscale.training import sft

    model, tok = load(cfg)
    mode, overrides = VARIANTS[name]
    settings = dataclasses.replace(cfg.train.sft, epochs=epochs, logging_steps=10, batching=mode)
    with batching(overrides):
        start = time.perf_counter()
        _, result = sft(model, tok, rows, settings, peft_config=None, output_dir=out, max_length=cfg.model.max_length,
                        seed=cfg.seed)
        wall = time.perf_counter() - start
    return {"wall_s": wall, "train_s": result.runtime_s, "steps": result.steps, "loss_last": result.last("loss"),
            "train_loss": result.last("train_loss")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--epochs", type=float, default=None, help="default: the default run's train.sft.epochs")
    ap.add_argument("--rows", type=int, default=None, help="only the first N rows (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--save-m1", default=None, help="keep the first variant's first model here (an M1 for "
                                                     "benchmarks/hf_generation.py --model)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = default_config()
    base_model_path(cfg)  # build the tiny model before any timing
    rows = sft_rows(cfg)[: args.rows]
    epochs = args.epochs if args.epochs is not None else cfg.train.sft.epochs
    names = args.variants.split(",")
    padded, free = padding_free_loss_check(cfg, rows)
    print(f"padding-free check on 8 examples: padded loss {padded:.6f}, padding-free loss {free:.6f}, "
          f"relative difference {abs(padded - free) / padded:.2e}")
    print(f"{len(rows)} rows, {epochs} epochs, batch {cfg.train.sft.batch_size}, torch threads "
          f"{torch.get_num_threads()}")
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for name in names:
                out = Path(args.save_m1) if (args.save_m1 and rep == 0 and name == names[0]) else Path(tmp) / name
                r = run_variant(cfg, rows, name, epochs, out)
                results[name].append(r)
                print(f"  rep {rep} {name:16s} {r['wall_s']:7.1f} s  steps {r['steps']:4d}  "
                      f"last logged loss {r['loss_last']:.3f}  mean train loss {r['train_loss']:.3f}", flush=True)
    ref = statistics.median(r["wall_s"] for r in results[names[0]])
    print(f"\n{'variant':16s} {'median s':>9s} {'vs ' + names[0]:>22s} {'steps':>6s} {'mean train loss':>16s}")
    for name in names:
        wall = statistics.median(r["wall_s"] for r in results[name])
        print(f"{name:16s} {wall:9.1f} {ref / wall:21.2f}x {results[name][0]['steps']:6d} "
              f"{statistics.median(r['train_loss'] for r in results[name]):16.3f}")


if __name__ == "__main__":
    main()
