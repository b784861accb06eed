"""Each evaluation of a stage is independent: one that fails or crashes loses none of the others."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from srscale.engines import Loaded
from srscale.errors import SrscaleError
from srscale.evaluation import lmeval, runner
from srscale.seed_data import SeedData
from srscale.stagebook import Job
from srscale.tracking import NullTracker
from test_config import compose_cfg


class _Models:
    device = "cpu"

    def load(self, source):
        return Loaded(model=None, tokenizer=None, source=source)

    def drop(self):
        pass


class _Engine:
    backend = "fake"

    def sampler(self, source):
        return SimpleNamespace(backend="fake", version="0", tokenizer=None)

    def release(self):
        pass


class _Tags(NullTracker):
    def __init__(self):
        self.tags: dict = {}

    def set_tags(self, tags):
        self.tags.update(tags)


def _stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lm_eval_error: Exception):
    cfg = compose_cfg(["eval.reward_model=false", "eval.lm_eval.enabled=true"])
    monkeypatch.setattr(runner, "task_accuracy_eval", lambda *a, **k: {"task/accuracy": 0.5})

    def crash(*args, **kwargs):
        raise lm_eval_error

    monkeypatch.setattr(lmeval, "run_lm_eval", crash)
    data = SeedData(heldout=[{"prompt": "What is 2 + 3?", "family": "arithmetic"}], verifiable=True)
    tracker = _Tags()
    ctx = SimpleNamespace(cfg=cfg, job=Job(cfg, tmp_path, tracker), data=data, engine=_Engine(), models=_Models(),
                          m1=None, n_params=1)
    rec = runner.evaluate_stage(ctx, None, "sft", step=0)
    return rec, tracker


def test_a_crashing_evaluation_keeps_the_others_and_its_traceback(tmp_path, monkeypatch) -> None:
    rec, tracker = _stage(tmp_path, monkeypatch, RuntimeError("index out of range\nsecond line"))
    assert rec["metrics"] == {"task/accuracy": 0.5}
    assert rec["errors"]["lm_eval"].startswith("RuntimeError: index out of range (traceback in eval/sft/")
    assert "\n" not in rec["errors"]["lm_eval"]
    assert "second line" in (tmp_path / "eval" / "sft" / "lm_eval_traceback.txt").read_text()
    assert json.loads((tmp_path / "eval" / "sft" / "DONE.json").read_text())["metrics"] == {"task/accuracy": 0.5}
    assert tracker.tags["eval_error.lm_eval.sft"].startswith("RuntimeError")


def test_a_user_error_is_its_one_line(tmp_path, monkeypatch) -> None:
    rec, _ = _stage(tmp_path, monkeypatch, SrscaleError("lm-eval: arc_easy needs eval.lm_eval.data_dir"))
    assert rec["errors"] == {"lm_eval": "lm-eval: arc_easy needs eval.lm_eval.data_dir"}
    assert rec["metrics"] == {"task/accuracy": 0.5}
    assert not (tmp_path / "eval" / "sft" / "lm_eval_traceback.txt").exists()
