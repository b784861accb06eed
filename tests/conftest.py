"""Shared fixtures. The public data files live beside the checkout in ../shared/data (CI has them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$SRSCALE_SHARED_DATA`` or ``<repo>/../shared/data``; fails loudly when absent."""
    path = Path(os.environ.get("SRSCALE_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        raise RuntimeError(f"test data not found at {path}: set SRSCALE_SHARED_DATA to the shared/data folder")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


# A very small built-in model and seed data for end-to-end jobs through the real CLI.
SMALL = [
    "model=tiny_300k", "model.tiny.corpus_examples=800", "model.tiny.pretrain_steps=20",
    "data.sizes.ift=64", "data.sizes.eft=64", "data.sizes.seed_pairs=16", "data.sizes.eft_eval=6",
    "data.sizes.heldout=8", "data.sizes.seed_prompts=24", "data.sizes.probe=16",
    "train.sft.epochs=1", "train.sft.logging_steps=2", "train.dpo.epochs=1", "self_reward.prompts_per_iteration=4",
    "self_reward.candidates=2", "judge.samples=2", "self_reward.max_new_tokens=12",
    "self_reward.instruct_max_new_tokens=16", "judge.max_new_tokens=64",
]
NO_GATE = ["self_reward.gate.max_consecutive=100000"]
# Enough judge SFT for that small model to write parseable "Score: n" judgments (measured: 100% of the
# probe parses, ~20 s of SFT on 2 cores), so iterations form pairs and run DPO.
JUDGES = ["data.sizes.eft=400", "train.sft.epochs=3", "train.sft.learning_rate=1e-2", "train.sft.batch_size=8",
          "self_reward.prompts_per_iteration=6", "train.dpo.batch_size=2"]


def merged(*override_lists: list[str]) -> list[str]:
    """Overrides in order, a later value of a key replacing an earlier one."""
    out: dict[str, str] = {}
    for overrides in override_lists:
        for item in overrides:
            out[item.split("=", 1)[0]] = item
    return list(out.values())


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "SRSCALE_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": ""}


def run_cli(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srscale", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlflow.db'}"




class ScriptedSampler:
    """A sampler (srscale.sampling's contract) whose completions come from ``reply(text, index, sample)``:
    for orchestration tests that must not depend on what a model happens to write."""

    backend, version = "scripted", "0"

    def __init__(self, tokenizer, reply, batch_size: int = 4):
        self.tokenizer, self.reply, self.batch_size = tokenizer, reply, batch_size
        self.calls: list[int] = []

    def generate(self, texts, params, *, seed, desc="", on_result=None, max_input_tokens=None):
        from srscale.sampling import Completion, InOrderDelivery

        delivery = InOrderDelivery(len(texts), on_result)
        for start in range(0, len(texts), self.batch_size):
            for i in range(start, min(start + self.batch_size, len(texts))):
                self.calls.append(i)
                delivery.add(i, [Completion(self.reply(texts[i], i, j), "stop", 10, 3) for j in range(params.n)])
            if delivery.stopped:
                break
        return delivery.results


class ScriptedEngine:
    """An engine serving one :class:`ScriptedSampler` per stage-model source."""

    backend, version = "scripted", "0"

    def __init__(self, samplers: dict):
        self.samplers, self.released = samplers, 0

    def sampler(self, source):
        return self.samplers[source]

    def release(self):
        self.released += 1

    def close(self):
        pass
