"""The job's generation engine (``generation.backend``) and the in-memory HF model cache behind it.

:class:`ModelCache` loads a stage model (an adapter over the base, or full weights; the base when the
source is None) with transformers and keeps only the current one; code that needs the model object
itself (lm-eval's harness, training) uses it. :class:`HFEngine` serves :class:`~srscale.generation.HFSampler`
over that cache. ``make_engine`` picks the backend; the vLLM one runs in its own process
(:mod:`srscale.vllm_sampler`).
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from srscale.config import Config


@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    source: Path | None  # the stage directory the weights came from (None: the base model)


class ModelCache:
    """Loads stage models on demand for inference; holds at most one."""

    def __init__(self, cfg: Config, base_path: str, device: str):
        self.cfg, self.base_path, self.device = cfg, base_path, device
        self.current: Loaded | None = None
        self._tokenizer = None

    def tokenizer(self):
        from srscale.models import load_tokenizer

        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.cfg.model, self.base_path)
        return self._tokenizer

    def load(self, source: Path | None) -> Loaded:
        from srscale.models import load_stage_weights

        if self.current is not None and self.current.source == source:
            return self.current
        self.drop()
        model = load_stage_weights(self.cfg.model, self.base_path, source, self.device)
        model.eval()
        self.current = Loaded(model, self.tokenizer(), source)
        return self.current

    def drop(self) -> None:
        """Forget the held model and free its memory (accelerator memory included)."""
        self.current = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass


class HFEngine:
    """Samplers over the transformers model of each stage, loaded in the job's own process."""

    backend = "hf"

    def __init__(self, models: ModelCache, batch_size: int):
        import transformers

        self.models, self.batch_size = models, batch_size
        self.version = transformers.__version__

    @property
    def tokenizer(self):
        return self.models.tokenizer()

    def sampler(self, source: Path | None):
        from srscale.generation import HFSampler

        loaded = self.models.load(source)
        return HFSampler(loaded.model, loaded.tokenizer, self.batch_size)

    def release(self) -> None:
        self.models.drop()

    def close(self) -> None:
        self.models.drop()


def make_engine(cfg: Config, models: ModelCache, job_dir: Path | None = None):
    """The engine ``cfg.generation.backend`` names (vLLM keeps its worker's log in ``job_dir``)."""
    if cfg.generation.backend == "vllm":
        from srscale.vllm_sampler import VLLMEngine

        return VLLMEngine.from_config(cfg, models, job_dir=job_dir)
    return HFEngine(models, cfg.self_reward.batch_size)
