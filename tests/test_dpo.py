"""DPO through TRL on a tiny built model: the reference is the model DPO started from, and training
moves the policy (TRL's own tests assert the same on tiny models)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from srscale.config import DPOConfig, LoraConfig, ModelConfig, SuiteSizes, TinyArchConfig
from srscale.models import load_tokenizer, peft_config
from srscale.suite.build import build_suite
from srscale.tinymodel import ensure_tiny_model
from srscale.train_stage import dpo_reference
from srscale.training import dpo

ARCH = TinyArchConfig(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2,
                      intermediate_size=64, corpus_examples=400, pretrain_steps=20, pretrain_batch_size=8,
                      pretrain_seq_len=64)
MCFG = ModelConfig(name="unit", source="tiny", tiny=ARCH, max_length=128)
SETTINGS = DPOConfig(learning_rate=5e-3, epochs=2, batch_size=8, logging_steps=1)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return ensure_tiny_model("unit", ARCH, tmp_path_factory.mktemp("cache"), ("Judge {prompt} {response}",))


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    sizes = SuiteSizes(ift=1, eft=0, seed_pairs=32, eft_eval=0, heldout=0, seed_prompts=0, probe=0)
    return build_suite(sizes, seed=5, judge_template="{prompt} {response}").seed_pairs


def test_reference_choice() -> None:
    assert dpo_reference(policy_is_adapter=True, adds_adapter=False, same_weights=True) == "adapter_copy"
    assert dpo_reference(policy_is_adapter=False, adds_adapter=True, same_weights=True) == "adapter_disabled"
    assert dpo_reference(policy_is_adapter=False, adds_adapter=False, same_weights=True) == "load"  # full FT
    assert dpo_reference(policy_is_adapter=True, adds_adapter=False, same_weights=False) == "load"  # ref = M1
    assert dpo_reference(policy_is_adapter=False, adds_adapter=True, same_weights=False) == "load"


def test_full_fine_tuning_with_an_explicit_reference(built: Path, pairs: list[dict], tmp_path: Path) -> None:
    tok = load_tokenizer(MCFG, str(built))
    policy = AutoModelForCausalLM.from_pretrained(built)
    ref = AutoModelForCausalLM.from_pretrained(built).eval()
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    ref_before = {n: p.detach().clone() for n, p in ref.named_parameters()}
    trained, result = dpo(policy, tok, pairs, SETTINGS, output_dir=tmp_path, max_length=128, ref_model=ref)
    # Policy == reference at the first step: DPO's sigmoid loss is exactly log 2 there.
    assert result.history[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert result.last("loss") < math.log(2) and result.mean("rewards/accuracies") is not None
    assert any(not torch.equal(before[n], p) for n, p in trained.named_parameters())
    assert all(torch.equal(ref_before[n], p) for n, p in ref.named_parameters())
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert torch.equal(reloaded.state_dict()["lm_head.weight"], trained.state_dict()["lm_head.weight"])


def test_continuing_an_adapter_uses_that_adapter_as_reference(built: Path, pairs: list[dict],
                                                              tmp_path: Path) -> None:
    """Iteration t>1 with LoRA: the policy is M(t)'s adapter, and so must the reference be (not the base)."""
    from peft import PeftModel, get_peft_model

    tok = load_tokenizer(MCFG, str(built))
    # An "SFT" adapter far from the base: random LoRA B, so base != M(t).
    torch.manual_seed(0)
    sft = get_peft_model(AutoModelForCausalLM.from_pretrained(built),
                         peft_config(MCFG, LoraConfig(r=4, alpha=8, dropout=0.0)))
    for n, p in sft.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 3.0)
    sft.save_pretrained(tmp_path / "m_t")
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(built), str(tmp_path / "m_t"),
                                       is_trainable=True)
    loaded = {n: p.detach().clone() for n, p in policy.named_parameters() if "lora_" in n}
    trained, result = dpo(policy, tok, pairs, SETTINGS, output_dir=tmp_path / "dpo", max_length=128)
    assert result.history[0]["loss"] == pytest.approx(math.log(2), abs=1e-3)
    assert result.last("loss") < math.log(2)
    assert list(trained.peft_config) == ["default"]  # TRL's frozen "ref" copy is not saved
    after = dict(trained.named_parameters())
    assert any(not torch.equal(loaded[n], after[n]) for n in loaded)
    saved = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(built), str(tmp_path / "dpo" / "model"))
    assert list(saved.peft_config) == ["default"]
