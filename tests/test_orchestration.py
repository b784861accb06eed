"""The orchestrator's own decisions, without training: job identity, run names, which model does what
(the fixed judge, the self-instruct writer, DPO's reference), and that training gets the memory."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from srscale import pipeline
from srscale.engines import HFEngine, ModelCache
from srscale.errors import SrscaleError
from srscale.evaluation import runner
from srscale.evaluation.h2h_stage import targets_for
from srscale.stagebook import Job
from srscale.tracking import NullTracker
from test_config import compose_cfg


def test_job_identity_leaves_out_where_it_is_tracked_cached_and_how_far_it_goes() -> None:
    a = compose_cfg(["self_reward.iterations=1", "tracking.tracking_uri=sqlite:///a.db", "cache_dir=/a"])
    b = compose_cfg(["self_reward.iterations=5", "tracking.tracking_uri=sqlite:///b.db", "cache_dir=/b"])
    assert pipeline.fingerprint(a) == pipeline.fingerprint(b)
    assert pipeline.config_id(a) == pipeline.config_id(b)
    c = compose_cfg(["device=cpu"])
    assert "device" in pipeline.fingerprint_diff(pipeline.fingerprint(a), pipeline.fingerprint(c))[0]


def test_seeds_share_a_config_id_and_other_settings_do_not() -> None:
    s0, s1 = compose_cfg(["seed=0"]), compose_cfg(["seed=1"])
    assert pipeline.config_id(s0) == pipeline.config_id(s1)
    assert pipeline.config_id(s0) != pipeline.config_id(compose_cfg(["lora=r16"]))


def test_run_names_say_the_configuration() -> None:
    cfg = compose_cfg(["model=tiny_4m", "lora=r16", "seed=1"])
    assert pipeline.run_name(cfg, None) == "tiny_4m|r16|seed=1"
    assert pipeline.run_name(cfg, "cs224n") == "tiny_4m|r16|seed=1|cs224n"
    assert pipeline.config_label(compose_cfg([]), None) == "tiny|full"


def test_iteration_variants_accumulate() -> None:
    assert pipeline.merge_variants(None, 3) == "3"
    assert pipeline.merge_variants("1,3", 5) == "1,3,5"
    assert pipeline.merge_variants("1,3", 1) == "1,3"


def test_iteration_one_is_compared_with_sft_once() -> None:
    assert targets_for(["sft"]) == {"vs_sft": "sft"}
    assert targets_for(["sft", "iter_1"]) == {"vs_sft": "sft", "vs_previous": "iter_1"}
    assert targets_for(["sft", "seed_dpo"]) == {"vs_sft": "sft", "vs_previous": "seed_dpo"}
    assert targets_for([]) == {}


def _ctx(tmp_path: Path, overrides: list[str]):
    cfg = compose_cfg(overrides)
    return SimpleNamespace(cfg=cfg, job=Job(cfg, tmp_path, NullTracker()), m1=tmp_path / "sft" / "model")


def test_self_instruct_is_written_by_the_model_the_config_names(tmp_path: Path) -> None:
    policy = tmp_path / "iter_1" / "dpo" / "model"
    assert pipeline._instruct_source(_ctx(tmp_path, []), policy) == policy
    ctx = _ctx(tmp_path, ["self_reward.instruct_model=m1"])
    assert pipeline._instruct_source(ctx, policy) == ctx.m1
    other = tmp_path / "writer"
    other.mkdir()
    assert pipeline._instruct_source(_ctx(tmp_path, [f"self_reward.instruct_model={other}"]), policy) == other
    with pytest.raises(SrscaleError, match="instruct_model"):
        pipeline._instruct_source(_ctx(tmp_path, [f"self_reward.instruct_model={tmp_path / 'none'}"]), policy)


class _RecordingEngine:
    backend, version = "fake", "0"

    def __init__(self):
        self.sources = []

    def sampler(self, source):
        self.sources.append(source)
        return SimpleNamespace(backend="fake", version="0", tokenizer=None, generate=lambda *a, **k: [])

    def release(self):
        pass


def test_the_local_judge_is_m1_at_every_stage(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, ["eval.mtbench.judge=local"])
    ctx.engine = _RecordingEngine()
    chat = runner._judge_chat(ctx, tokens=runner.TokenCount())
    assert ctx.engine.sources == []
    try:
        chat([[{"role": "user", "content": "judge this"}]], 4)
    except Exception:  # noqa: BLE001 - the fake sampler cannot render; only the source matters here
        pass
    assert ctx.engine.sources == [ctx.m1]
    assert runner._judge_label(ctx).startswith("local:m1 (sft/model")


def test_training_starts_with_no_generation_model_held(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_cfg([])
    models = ModelCache(cfg, "unused", "cpu")
    held = torch.nn.Linear(4, 4)
    models.current = SimpleNamespace(model=held, tokenizer=None, source=None)
    ref = weakref.ref(held)
    del held
    engine = HFEngine(models, batch_size=2)
    seen = {}

    def fake_run_spec(spec, placement):
        gc.collect()
        seen["alive"] = ref() is not None
        seen["cache"] = models.current
        return "trained"

    monkeypatch.setattr(pipeline, "run_spec", fake_run_spec)
    ctx = SimpleNamespace(cfg=cfg, engine=engine, models=models)
    assert pipeline.train(ctx, spec=None) == "trained"
    assert seen == {"alive": False, "cache": None}
