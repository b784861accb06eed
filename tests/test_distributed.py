"""Training stages in several processes (``train.distributed``): the launch command, the stage spec,
and end-to-end jobs whose SFT and DPO run as 2-process DDP on the CPU (gloo) under torchrun."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import NO_GATE, SMALL, merged, run_cli
from srscale.config import DistributedConfig, DPOConfig, LoraConfig, ModelConfig, TinyArchConfig
from srscale.errors import SrscaleError
from srscale.launch import ACCELERATE_DIR, accelerate_config_path, check, launch_command
from srscale.train_stage import TrainSpec


def test_ddp_launches_through_torchrun() -> None:
    cmd = launch_command(Path("/job/sft/spec.json"), DistributedConfig(num_processes=4))
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
                   "-m", "srscale.train_worker", "/job/sft/spec.json"]


def test_fsdp_launches_through_accelerate_with_the_named_config() -> None:
    cmd = launch_command(Path("spec.json"), DistributedConfig(num_processes=8, accelerate_config="fsdp"))
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--config_file"]
    assert cmd[4] == str(ACCELERATE_DIR / "fsdp.yaml")
    assert cmd[5:] == ["--num_processes", "8", "-m", "srscale.train_worker", "spec.json"]


def test_accelerate_config_by_path(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("distributed_type: MULTI_GPU\n")
    assert accelerate_config_path(str(mine)) == mine.resolve()
    assert accelerate_config_path("deepspeed_zero3") == ACCELERATE_DIR / "deepspeed_zero3.yaml"


@pytest.mark.parametrize("dist,expect", [
    (DistributedConfig(num_processes=2, accelerate_config="fdsp"), "no such file; give a path"),
    (DistributedConfig(num_processes=1, accelerate_config="fsdp"), "num_processes=1"),
])
def test_configs_that_cannot_launch_fail_at_start(dist: DistributedConfig, expect: str) -> None:
    with pytest.raises(SrscaleError) as err:
        check(dist)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_spec_round_trips_through_json() -> None:
    arch = TinyArchConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                          intermediate_size=64)
    spec = TrainSpec(kind="dpo", model=ModelConfig(name="t", source="tiny", tiny=arch), lora=LoraConfig(r=8),
                     settings=DPOConfig(beta=0.2), base_path="/m", policy_dir="/j/sft/model", ref_dir=None,
                     rows_file="/j/rows.jsonl", output_dir="/j/dpo", max_length=128, epochs=6.0, prefix="seed_dpo")
    assert TrainSpec.from_json(spec.to_json()) == spec


def _result(jobdir: Path, stage: str) -> dict:
    return json.loads((jobdir / stage / "result.json").read_text())


@pytest.mark.slow
def test_full_fine_tuning_job_trains_in_two_processes(tmp_path: Path, env: dict) -> None:
    args = merged(SMALL, NO_GATE, ["train.dpo.batch_size=2", "self_reward.iterations=0", "train.seed_dpo_epochs=1", "eval=none",
                                   "tracking=none", "train.distributed.num_processes=2"])
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    for stage in ("sft", "seed_dpo"):
        assert _result(jobdir, stage)["processes"] == 2, stage
        assert (jobdir / stage / "model" / "model.safetensors").exists(), stage
    # 16 seed pairs, 2 per process and step, 2 processes: 4 steps (one process alone would take 8).
    assert json.loads((jobdir / "seed_dpo" / "DONE.json").read_text())["steps"] == 4
    # Reference = the SFT weights DPO started from, loaded explicitly for full fine-tuning: log 2 at step 1.
    assert _result(jobdir, "seed_dpo")["history"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)


@pytest.mark.slow
def test_lora_job_trains_in_two_processes_and_saves_one_adapter(tmp_path: Path, env: dict) -> None:
    args = merged(SMALL, NO_GATE, ["lora=r8", "train.dpo.batch_size=2", "self_reward.iterations=0", "train.seed_dpo_epochs=1", "eval=none",
                                   "tracking=none", "train.distributed.num_processes=2"])
    out = run_cli(args, tmp_path, env)
    assert out.returncode == 0, out.stderr[-3000:]
    (jobdir,) = [p for p in (tmp_path / "outputs").iterdir() if p.is_dir()]
    seed_dpo = jobdir / "seed_dpo" / "model"
    assert (seed_dpo / "adapter_config.json").exists() and not (seed_dpo / "ref").exists()
    assert _result(jobdir, "seed_dpo")["processes"] == 2
    # TRL's frozen copy of the SFT adapter is the reference: log 2 at the first step.
    assert _result(jobdir, "seed_dpo")["history"][0]["loss"] == pytest.approx(0.6931, abs=1e-3)
