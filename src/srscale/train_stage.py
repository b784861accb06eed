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
    epochs: float | None = None  # overrides settings.epochs (DPO on seed pairs)
    prefix: str = "dpo"
    sharded: bool = False  # FSDP / ZeRO-3 through an accelerate config: the trainer places the weights

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
    return {"steps": result.steps, "runtime_s": result.runtime_s, "history": result.history,
            "examples_seen": result.examples_seen, "precision": result.precision}


def result_from_dict(raw: dict[str, Any]) -> TrainResult:
    return TrainResult(steps=raw["steps"], runtime_s=raw["runtime_s"], history=raw["history"],
                       examples_seen=raw.get("examples_seen", 0), precision=raw.get("precision", {}))


@dataclass(frozen=True)
class Placement:
    """Where one training process puts its model: ``load_device`` for loading (None: leave it where
    ``from_pretrained`` puts it, for FSDP / ZeRO-3 to shard), ``device_type`` for the trainer."""

    load_device: str | None
    device_type: str  # "cuda" | "cpu"

    @property
    def use_cpu(self) -> bool:
        return self.device_type != "cuda"


def worker_placement(env: dict[str, str], cuda_available: bool, sharded: bool) -> Placement:
    """The device of one process of a several-process training stage (pure).

    Each process trains on its own GPU, ``cuda:<LOCAL_RANK>``: DDP wants the replica there before
    training; FSDP and ZeRO-3 shard from the CPU copy themselves. Without CUDA the workers train on
    the CPU (gloo), as the tests do.
    """
    if not cuda_available:
        return Placement("cpu", "cpu")
    local_rank = int(env.get("LOCAL_RANK", "0"))
    return Placement(None if sharded else f"cuda:{local_rank}", "cuda")


def local_placement(device: str) -> Placement:
    """The job's own process trains where it generates (``cuda`` or ``cpu``)."""
    return Placement(device, "cuda" if str(device).startswith("cuda") else "cpu")


def run_spec(spec: TrainSpec, placement: Placement) -> TrainResult:
    """Load, train and save as ``spec`` says, on ``placement``.

    In several processes every one of them calls this; the trainer shards the work and only the main
    process writes the model and ``result.json``.
    """
    import logging

    from srscale.models import is_adapter_dir, load_stage_weights, load_tokenizer, peft_config
    from srscale.training import dpo, sft, training_precision

    tok = load_tokenizer(spec.model, spec.base_path)
    adapter = is_adapter_dir(spec.policy_dir)
    full = not spec.lora.enabled and not adapter
    precision = training_precision(spec.model.dtype, full, placement.device_type, spec.model.load_in_4bit,
                                   bf16_supported=_bf16_supported(placement))
    if precision.note:
        logging.getLogger(__name__).info("%s: %s", spec.prefix if spec.kind == "dpo" else "sft", precision.note)
    model = load_stage_weights(spec.model, spec.base_path, spec.policy_dir, placement.load_device,
                               trainable_adapter=True, dtype=precision.load_dtype)
    rows = read_jsonl(Path(spec.rows_file))
    out = Path(spec.output_dir)
    new_adapter = peft_config(spec.model, spec.lora) if (spec.lora.enabled and not adapter) else None
    common = dict(output_dir=out, max_length=spec.max_length, seed=spec.seed, precision=precision,
                  gradient_checkpointing=spec.model.gradient_checkpointing, use_cpu=placement.use_cpu)
    if spec.kind == "sft":
        _, result = sft(model, tok, rows, spec.settings, peft_config=new_adapter, **common)
    else:
        how = dpo_reference(adapter, new_adapter is not None, same_weights=spec.ref_dir == spec.policy_dir)
        ref = _reference(spec, placement) if how == "load" else None
        _, result = dpo(model, tok, rows, spec.settings, ref_model=ref, peft_config=new_adapter, prefix=spec.prefix,
                        epochs=spec.epochs, **common)
    result.precision = {"load_dtype": precision.load_dtype, "bf16": precision.bf16, "fp16": precision.fp16}
    return result


def _bf16_supported(placement: Placement) -> bool:
    if placement.device_type != "cuda":
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _reference(spec: TrainSpec, placement: Placement):
    """The frozen reference weights (an adapter merged into its base); float32 on a CPU."""
    from srscale.models import is_adapter_dir, load_stage_weights

    dtype = "float32" if placement.use_cpu else None
    ref = load_stage_weights(spec.model, spec.base_path, spec.ref_dir, placement.load_device, dtype=dtype)
    return (ref.merge_and_unload() if is_adapter_dir(spec.ref_dir) else ref).eval()


def count_train_tokens(tokenizer, kind: str, rows: list[dict], max_length: int) -> tuple[int, int]:
    """(tokens of one epoch, rows cut at ``max_length``) for SFT rows or DPO pairs, as the trainers
    tokenize them (the chat template; DPO trains on prompt+chosen and prompt+rejected)."""
    def length(prompt: str, reply: str) -> int:
        conv = [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]
        return len(tokenizer.apply_chat_template(conv, tokenize=True, return_dict=True)["input_ids"])

    tokens = cut = 0
    for r in rows:
        replies = [r["response"]] if kind == "sft" else [r["chosen"], r["rejected"]]
        lengths = [length(r["prompt"], reply) for reply in replies]
        tokens += sum(min(n, max_length) for n in lengths)
        cut += any(n > max_length for n in lengths)
    return tokens, cut


def write_result(spec: TrainSpec, result: TrainResult, processes: int = 1) -> Path:
    path = Path(spec.output_dir) / "result.json"
    write_json(path, {**result_to_dict(result), "processes": processes})
    return path
