"""Wall time of one 4-job tiny sweep, one job after another vs side by side through joblib.

    python benchmarks/sweep_wall_time.py [--rounds 1] [--n-jobs 2] [--iterations 1]

Each round runs the same sweep (4 seeds of a very small configuration, fresh output folder and
MLflow store each time, the tiny model's build cached beforehand) once sequentially (Hydra's basic
launcher, each job with every core's torch threads) and once with ``hydra/launcher=joblib``
(``n_jobs`` at a time, each with its share of the cores), interleaved so that load from other
processes falls on both alike. Prints each run's wall time and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TINY = [
    "model=tiny_300k", "model.tiny.corpus_examples=800", "model.tiny.pretrain_steps=20",
    "data.sizes.ift=64", "data.sizes.eft=64", "data.sizes.seed_pairs=16", "data.sizes.eft_eval=6",
    "data.sizes.heldout=8", "data.sizes.seed_prompts=24", "data.sizes.probe=16", "train.sft.epochs=1",
    "self_reward.prompts_per_iteration=4", "self_reward.candidates=2", "judge.samples=2",
    "self_reward.max_new_tokens=12", "self_reward.instruct_max_new_tokens=16", "judge.max_new_tokens=16",
    "self_reward.gate.max_consecutive=100000",
]


def run_sweep(extra: list[str], env: dict, workdir: Path) -> float:
    workdir.mkdir(parents=True)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "srscale", "-m", *TINY, *extra], cwd=workdir, env=env,
                         capture_output=True, text=True)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"sweep failed ({' '.join(extra)}):\n{out.stderr[-3000:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="srscale-bench-"))
    env = {**os.environ, "SRSCALE_CACHE": str(root / "cache"), "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": ""}
    sweep = [f"self_reward.iterations={args.iterations}", "seed=1,2,3,4"]
    print(f"cores available: {len(os.sched_getaffinity(0))}; load average at start: {os.getloadavg()}")
    print(f"sweep: 4 jobs, {' '.join(TINY + sweep)}")
    run_sweep([*sweep[:1], "seed=0", "tracking=none"], env, root / "warmup")  # builds and caches the model
    results: dict[str, list[float]] = {"sequential": [], f"joblib n_jobs={args.n_jobs}": []}
    for r in range(args.rounds):
        order = list(results) if r % 2 == 0 else list(reversed(results))
        for name in order:
            extra = sweep if name == "sequential" else [*sweep, "hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.n_jobs}"]
            wall = run_sweep(extra, env, root / f"{r}-{name.split()[0]}")
            results[name].append(wall)
            print(f"round {r + 1}: {name:<18} {wall:7.1f} s   (load average {os.getloadavg()[0]:.1f})", flush=True)
    seq, par = (sum(v) / len(v) for v in results.values())
    print(f"mean: sequential {seq:.1f} s, joblib {par:.1f} s, sequential / joblib = {seq / par:.2f}")


if __name__ == "__main__":
    main()
