"""One training stage (SFT or DPO) described as data, so that it runs the same in the pipeline's own
process or in N processes started by :mod:`srscale.launch` (DDP, FSDP or DeepSpeed ZeRO-3).

A :class:`TrainSpec` names the weights to start from, the reference, the rows (a jsonl file), the
hyperparameters and where the trained model goes; :func:`run_spec` loads the models, trains with
:mod:`srscale.training` and saves. Assumes every process sees the same files (one machine, or a
shared file system).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from srscale.config import DPOConfig, LoraConfig, ModelConfig, ResourcesConfig, SFTConfig, TinyArchConfig
from srscale.seed_data import read_jsonl, write_json
from srscale.training import TrainResult


def dpo_reference(policy_is_adapter: bool, adds_adapter: bool, same_weights: bool) -> str:
    """Where DPO's reference model comes from.

    ``"adapter_copy"``: the policy is a loaded adapter and the reference is the same weights; TRL
    copies that adapter into a frozen "ref" adapter. ``"adapter_disabled"``: a fresh adapter goes on
    the policy's weights; with the adapter disabled the model *is* the reference. ``"load"``: any
    other case; the pipeline loads the reference weights itself (left alone, TRL would reload the
    *base* model from its hub path, which is wrong after SFT with full fine-tuning).
    """
    if same_weights and policy_is_adapter:
        return "adapter_copy"
    if same_weights and adds_adapter:
        return "adapter_disabled"
    return "load"


@dataclass
class TrainSpec:
    kind: str  # "sft" | "dpo"
    model: ModelConfig
    lora: LoraConfig
    settings: SFTConfig | DPOConfig
    base_path: str  # the base weights (hub id, local path, or the built tiny model)
    policy_dir: str | None  # saved stage model to start from (adapter or full weights); None: the base
    ref_dir: str | None  # DPO's reference weights; None: the base
    rows_file: str  # jsonl: {"prompt", "response"} for SFT, {"prompt", "chosen", "rejected"} for DPO
    output_dir: str  # the model is saved to output_dir/model
    max_length: int
    seed: int = 0
    bf16: bool = False
    epochs: float | None = None  # overrides settings.epochs (DPO on seed pairs)
    prefix: str = "dpo"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        raw = json.loads(text)
        model = dict(raw["model"])
        if model.get("tiny") is not None:
            model["tiny"] = TinyArchConfig(**model["tiny"])
        if isinstance(model.get("resources"), dict):
            model["resources"] = ResourcesConfig(**model["resources"])
        settings_cls = SFTConfig if raw["kind"] == "sft" else DPOConfig
        return cls(**{**raw, "model": ModelConfig(**model), "lora": LoraConfig(**raw["lora"]),
                      "settings": settings_cls(**raw["settings"])})


def result_to_dict(result: TrainResult) -> dict[str, Any]:
    return {"steps": result.steps, "runtime_s": result.runtime_s, "history": result.history}


def result_from_dict(raw: dict[str, Any]) -> TrainResult:
    return TrainResult(steps=raw["steps"], runtime_s=raw["runtime_s"], history=raw["history"])


def run_spec(spec: TrainSpec, device: str | None) -> TrainResult:
    """Load, train and save as ``spec`` says. ``device=None``: leave placement to the trainer (N processes).

    In several processes every one of them calls this; the trainer shards the work and only the main
    process writes the model and ``result.json``.
    """
    from srscale.models import is_adapter_dir, load_stage_weights, load_tokenizer, peft_config
    from srscale.training import dpo, sft

    tok = load_tokenizer(spec.model, spec.base_path)
    adapter = is_adapter_dir(spec.policy_dir)
    model = load_stage_weights(spec.model, spec.base_path, spec.policy_dir, device, trainable_adapter=True)
    rows = read_jsonl(Path(spec.rows_file))
    out = Path(spec.output_dir)
    new_adapter = peft_config(spec.model, spec.lora) if (spec.lora.enabled and not adapter) else None
    if spec.kind == "sft":
        _, result = sft(model, tok, rows, spec.settings, peft_config=new_adapter, output_dir=out,
                        max_length=spec.max_length, seed=spec.seed, bf16=spec.bf16,
                        gradient_checkpointing=spec.model.gradient_checkpointing)
    else:
        how = dpo_reference(adapter, new_adapter is not None, same_weights=spec.ref_dir == spec.policy_dir)
        ref = _reference(spec, device) if how == "load" else None
        _, result = dpo(model, tok, rows, spec.settings, output_dir=out, max_length=spec.max_length,
                        ref_model=ref, peft_config=new_adapter, seed=spec.seed, prefix=spec.prefix,
                        bf16=spec.bf16, epochs=spec.epochs,
                        gradient_checkpointing=spec.model.gradient_checkpointing)
    return result


def _reference(spec: TrainSpec, device: str | None):
    """The frozen reference weights (an adapter merged into its base)."""
    from srscale.models import is_adapter_dir, load_stage_weights

    ref = load_stage_weights(spec.model, spec.base_path, spec.ref_dir, device)
    return (ref.merge_and_unload() if is_adapter_dir(spec.ref_dir) else ref).eval()


def write_result(spec: TrainSpec, result: TrainResult, processes: int = 1) -> Path:
    path = Path(spec.output_dir) / "result.json"
    write_json(path, {**result_to_dict(result), "processes": processes})
    return path
