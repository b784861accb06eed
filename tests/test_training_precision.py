"""Where and in what precision a training stage trains: each worker on its own GPU, fp32 master weights
for full fine-tuning of half-precision presets, and never a silent bf16 autocast on a CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srscale.config import DPOConfig, LoraConfig, ModelConfig, SFTConfig, TinyArchConfig
from srscale.train_stage import Placement, TrainSpec, local_placement, run_spec, worker_placement
from srscale.training import training_precision


def test_each_worker_trains_on_its_own_local_gpu() -> None:
    p = worker_placement({"LOCAL_RANK": "3", "RANK": "7"}, cuda_available=True, sharded=False)
    assert p == Placement("cuda:3", "cuda") and not p.use_cpu


def test_sharded_workers_leave_weights_for_the_trainer_to_shard_but_train_on_gpu() -> None:
    p = worker_placement({"LOCAL_RANK": "1"}, cuda_available=True, sharded=True)
    assert p.load_device is None and p.device_type == "cuda" and not p.use_cpu


def test_workers_without_cuda_train_on_the_cpu() -> None:
    assert worker_placement({"LOCAL_RANK": "1"}, cuda_available=False, sharded=False) == Placement("cpu", "cpu")
    assert local_placement("cuda").device_type == "cuda" and local_placement("cpu").use_cpu


@pytest.mark.parametrize("dtype,half", [("bfloat16", "bf16"), ("float16", "fp16")])
def test_full_fine_tuning_keeps_fp32_master_weights(dtype: str, half: str) -> None:
    p = training_precision(dtype, full_finetune=True, device_type="cuda")
    assert p.load_dtype == "float32" and (p.bf16, p.fp16) == (half == "bf16", half == "fp16") and p.note


def test_lora_keeps_the_frozen_base_in_half_precision() -> None:
    p = training_precision("bfloat16", full_finetune=False, device_type="cuda")
    assert p.load_dtype == "bfloat16" and p.bf16 and not p.fp16
    p = training_precision("float16", full_finetune=False, device_type="cuda")
    assert p.load_dtype == "float16" and p.fp16  # with the Trainer's loss scaler


def test_bf16_unsupported_falls_back_to_fp16_with_a_scaler() -> None:
    p = training_precision("auto", full_finetune=True, device_type="cuda", bf16_supported=False)
    assert p.load_dtype == "float32" and p.fp16 and not p.bf16


def test_a_cpu_never_gets_half_precision_autocast() -> None:
    for dtype in ("bfloat16", "float16", "auto", "float32"):
        for full in (True, False):
            p = training_precision(dtype, full_finetune=full, device_type="cpu")
            assert (p.load_dtype, p.bf16, p.fp16) == ("float32", False, False)
            assert (p.note is None) == (dtype == "float32")


def test_float32_presets_train_in_float32() -> None:
    p = training_precision("float32", full_finetune=True, device_type="cuda")
    assert (p.load_dtype, p.bf16, p.fp16, p.note) == ("float32", False, False, None)


def test_a_bf16_preset_trains_in_float32_on_the_cpu(tmp_path: Path) -> None:
    from srscale.seed_data import write_jsonl
    from srscale.tinymodel import ensure_tiny_model

    arch = TinyArchConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                          intermediate_size=64, corpus_examples=100, pretrain_steps=0)
    base = ensure_tiny_model("t", arch, tmp_path / "cache")
    model = ModelConfig(name="t", source="tiny", dtype="bfloat16", tiny=arch, max_length=64)
    rows = [{"prompt": f"What is {i} + 1?", "response": str(i + 1)} for i in range(4)]
    write_jsonl(tmp_path / "rows.jsonl", rows)
    spec = TrainSpec(kind="sft", model=model, lora=LoraConfig(enabled=False),
                     settings=SFTConfig(learning_rate=1e-3, max_steps=1, batch_size=2), base_path=str(base),
                     policy_dir=None, ref_dir=None, rows_file=str(tmp_path / "rows.jsonl"),
                     output_dir=str(tmp_path / "sft"), max_length=64)
    result = run_spec(spec, local_placement("cpu"))
    assert result.precision == {"load_dtype": "float32", "bf16": False, "fp16": False}
    saved = json.loads((tmp_path / "sft" / "model" / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "float32"
    assert DPOConfig().loss_type == "sigmoid" and torch.get_default_dtype() == torch.float32
