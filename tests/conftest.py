"""Shared fixtures. The public data files live beside the checkout in ../shared/data (CI has them).

Tests do not depend on the caller's environment: the variables that change what srscale and its
libraries do (offline switches, caches, the MLflow store, API keys) are removed when this file is
imported, before any test module imports ``datasets``, ``huggingface_hub`` or ``mlflow`` (they read
them once, at import), and again around every test; ``HF_HOME`` points at a fresh folder for the
session. CLI jobs started through :func:`run_cli` get the :func:`env` fixture's deliberate settings:
this checkout's ``src`` first on ``PYTHONPATH``, offline, a session cache for built models, MLflow's
default store in the test's directory, and no GPU (``gpu_env`` keeps the GPUs the caller made
visible, for tests marked ``gpu``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

ISOLATED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HOME", "HF_HUB_CACHE",
            "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "TRANSFORMERS_CACHE", "HF_ENDPOINT", "HF_TOKEN",
            "HUGGING_FACE_HUB_TOKEN", "SRSCALE_CACHE", "OPENAI_API_KEY")
ISOLATED_PREFIXES = ("MLFLOW_",)
CALLER_ENV = dict(os.environ)  # before isolation: gpu_env reads the caller's CUDA_VISIBLE_DEVICES


def _isolated(name: str) -> bool:
    return name in ISOLATED or name.startswith(ISOLATED_PREFIXES)


for _name in [n for n in os.environ if _isolated(n)]:
    del os.environ[_name]
# Subprocesses run in other directories: a relative PYTHONPATH entry (PYTHONPATH=src) must still work.
if os.environ.get("PYTHONPATH"):
    os.environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).absolute()) if p else p
                                               for p in os.environ["PYTHONPATH"].split(os.pathsep))
HF_HOME = tempfile.mkdtemp(prefix="srscale-tests-hf-")
os.environ["HF_HOME"] = HF_HOME

# The suite runs in parallel workers (pytest-xdist; pyproject's addopts): each worker, and each CLI job
# it starts, takes its share of the cores, so two workers on two cores do not spin four OpenMP threads.
MAX_WORKERS = 4  # each CLI job holds about 1 GB; more workers gain little on the CPU-bound jobs
CORES = len(os.sched_getaffinity(0)) or 1
WORKERS = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
THREADS_PER_WORKER = max(1, CORES // WORKERS)
if WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = str(THREADS_PER_WORKER)  # before any test module imports torch


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core, at most :data:`MAX_WORKERS`."""
    return max(1, min(CORES, MAX_WORKERS))


def pytest_unconfigure(config) -> None:
    shutil.rmtree(HF_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch) -> None:
    """Every test starts without the isolated variables (a test may set its own with monkeypatch)."""
    for name in [n for n in os.environ if _isolated(n)]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HOME", HF_HOME)


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
    "self_reward.instruct_max_new_tokens=16",  # judge.max_new_tokens: the tiny preset's, which fits its prompt
]
NO_GATE = ["self_reward.gate.max_consecutive=100000"]
# Enough pretraining and judge SFT for that small model to write parseable "Score: n" judgments
# (measured on the suite's EFT targets, which restate the answer first: 100% of the probe parses with
# 200 pretraining steps and 6 SFT epochs, against 12-44% with 20 steps and 3-6 epochs; ~35 s on 2 cores),
# so iterations form pairs and run DPO.
JUDGES = ["model.tiny.pretrain_steps=200", "data.sizes.eft=400", "train.sft.epochs=6", "train.sft.learning_rate=1e-2",
          "train.sft.batch_size=8", "self_reward.prompts_per_iteration=6", "train.dpo.batch_size=2"]


def merged(*override_lists: list[str]) -> list[str]:
    """Overrides in order, a later value of a key replacing an earlier one."""
    out: dict[str, str] = {}
    for overrides in override_lists:
        for item in overrides:
            out[item.split("=", 1)[0]] = item
    return list(out.values())


@pytest.fixture(scope="session")
def env(tmp_path_factory) -> dict:
    """The environment of a CLI job in a test: the isolated one, offline, with a session cache of
    built models, MLflow's default store (in the job's working directory) and the CPU only."""
    # Parallel workers share one cache (their base temp folders sit in one folder): each built model is
    # built once per test run, not once per worker (concurrent builds are safe: srscale.tinymodel).
    if WORKERS > 1:
        cache = tmp_path_factory.getbasetemp().parent / "cache"
        cache.mkdir(exist_ok=True)
    else:
        cache = tmp_path_factory.mktemp("cache")
    base = {k: v for k, v in os.environ.items() if not _isolated(k)}
    # The CLI under test is this checkout's, whatever srscale is installed.
    entries = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p and p != str(REPO / "src")]
    pythonpath = os.pathsep.join([str(REPO / "src"), *entries])
    # SRSCALE_PARALLEL_JOBS: the job shares the cores with the other workers' jobs (srscale.resources).
    return {**base, "PYTHONPATH": pythonpath, "HF_HOME": HF_HOME, "SRSCALE_CACHE": str(cache),
            "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": "", "CUDA_VISIBLE_DEVICES": "",
            "SRSCALE_PARALLEL_JOBS": str(WORKERS)}


@pytest.fixture(scope="session")
def gpu_env(env) -> dict:
    """:func:`env` with the GPUs the caller made visible (for tests marked ``gpu``)."""
    out = {k: v for k, v in env.items() if k != "CUDA_VISIBLE_DEVICES"}
    if "CUDA_VISIBLE_DEVICES" in CALLER_ENV:
        out["CUDA_VISIBLE_DEVICES"] = CALLER_ENV["CUDA_VISIBLE_DEVICES"]
    return out


def run_cli(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "srscale", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def store(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlflow.db'}"




class ScriptedSampler:
    """A sampler (srscale.sampling's contract) whose completions come from ``reply(text, index, sample)``:
    for orchestration tests that must not depend on what a model happens to write. A reply longer than
    ``params.max_new_tokens`` tokens is cut there (``finish_reason="length"``), and an input longer than
    ``max_input_tokens`` is reported as cut on the left, as a real backend would."""

    backend, version = "scripted", "0"

    def __init__(self, tokenizer, reply, batch_size: int = 4):
        self.tokenizer, self.reply, self.batch_size = tokenizer, reply, batch_size
        self.calls: list[int] = []

    def _completion(self, text: str, i: int, j: int, params, max_input_tokens) -> object:
        from srscale.sampling import Completion

        ids = self.tokenizer(self.reply(text, i, j), add_special_tokens=False)["input_ids"]
        n_in = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        cut_in = max_input_tokens is not None and n_in > max_input_tokens
        kept = ids[:params.max_new_tokens]
        return Completion(self.tokenizer.decode(kept), "length" if len(ids) > params.max_new_tokens else "stop",
                          min(n_in, max_input_tokens) if cut_in else n_in, len(kept), cut_in)

    def generate(self, texts, params, *, seed, desc="", on_result=None, max_input_tokens=None):
        from srscale.sampling import InOrderDelivery

        delivery = InOrderDelivery(len(texts), on_result)
        for start in range(0, len(texts), self.batch_size):
            for i in range(start, min(start + self.batch_size, len(texts))):
                self.calls.append(i)
                delivery.add(i, [self._completion(texts[i], i, j, params, max_input_tokens) for j in range(params.n)])
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
