"""SFT and DPO through TRL, with LoRA (PEFT) or full fine-tuning.

Both take a model object and typed config, train, save to the directory they are given, and return
the trained model with a :class:`TrainResult`. They never open the tracker: the pipeline passes a
``log_fn(metrics, step)`` that a small callback feeds with the trainer's own log records, prefixed
per stage. (TRL's built-in MLflow reporting logs unprefixed keys and the trainer arguments as
params, which collide between the SFT and DPO trainers of one job's single MLflow run.)

Assumptions: data are conversational (chat-template) rows; loss on completion tokens only for SFT;
the DPO reference is whatever the policy is at the start of the call unless ``ref_model`` is given
(with PEFT, TRL copies the loaded adapter into a frozen "ref" adapter; with full fine-tuning it
reloads the weights from the directory the policy came from).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainerCallback

from srscale.config import DPOConfig as DPOSettings
from srscale.config import SFTConfig as SFTSettings

log = logging.getLogger(__name__)

LogFn = Callable[[dict[str, float], int], None]

# Paper: SFT lr 5.5e-6 decays to 1.1e-6 (ratio 0.2); DPO 1e-6 decays to 1e-7 (ratio 0.1).
SFT_MIN_LR_RATIO = 0.2
DPO_MIN_LR_RATIO = 0.1


@dataclass(frozen=True)
class Precision:
    """How a training stage holds and computes its weights."""

    load_dtype: str  # the dtype the trainable model is loaded in
    bf16: bool  # bf16 autocast (the Trainer's mixed precision), weights stay in load_dtype
    fp16: bool  # fp16 autocast with a loss scaler
    note: str | None = None  # why the configured dtype was not used as is (logged)


def training_precision(dtype: str, full_finetune: bool, device_type: str, load_in_4bit: bool = False,
                       bf16_supported: bool = True) -> Precision:
    """The precision a training stage uses for ``model.dtype`` (pure).

    * Full fine-tuning never trains pure half-precision weights: at the paper's learning rates (1e-6)
      an update of a bf16 weight of 0.02 rounds to nothing. It loads float32 master weights and runs
      bf16 (or fp16 with a loss scaler) autocast.
    * LoRA keeps the frozen base in the configured dtype; PEFT holds the adapter in float32, and
      autocast computes in half precision.
    * On a CPU every stage trains in float32: a bf16 preset never switches on CPU autocast silently.
    * ``auto``: bf16 autocast where the GPU supports it; LoRA bases load in the checkpoint's dtype.
    """
    if device_type != "cuda":
        if load_in_4bit:
            raise ValueError("4-bit loading needs a CUDA device")
        note = None if dtype == "float32" else f"model.dtype={dtype} applies on GPUs; training in float32 on the {device_type}"
        return Precision("float32", False, False, note)
    if load_in_4bit:
        return Precision(dtype if dtype != "float32" else "bfloat16", True, False)
    if dtype == "float32":
        return Precision("float32", False, False)
    half = {"bfloat16": "bf16", "float16": "fp16"}.get(dtype) or ("bf16" if bf16_supported else "fp16")
    if dtype == "bfloat16" and not bf16_supported:
        half = "fp16"
    load = "float32" if full_finetune else dtype
    note = (f"full fine-tuning with model.dtype={dtype}: float32 master weights with {half} autocast"
            if full_finetune and dtype != "float32" else None)
    return Precision(load, half == "bf16", half == "fp16", note)


@dataclass
class TrainResult:
    steps: int = 0
    runtime_s: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)  # every trainer log record
    examples_seen: int = 0  # rows processed over all steps and processes (steps x global batch)
    precision: dict = field(default_factory=dict)

    def series(self, key: str) -> list[float]:
        return [rec[key] for rec in self.history if key in rec]

    def last(self, key: str) -> float | None:
        values = self.series(key)
        return values[-1] if values else None

    def mean(self, key: str) -> float | None:
        values = self.series(key)
        return sum(values) / len(values) if values else None


class _Recorder(TrainerCallback):
    """Keeps every numeric log record and forwards it, prefixed, to ``log_fn``."""

    def __init__(self, result: TrainResult, prefix: str, log_fn: LogFn | None):
        self.result, self.prefix, self.log_fn = result, prefix, log_fn

    def on_log(self, args, state, control, logs=None, **kwargs):
        numeric = {k: float(v) for k, v in (logs or {}).items()
                   if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if not numeric:
            return
        self.result.history.append({**numeric, "step": state.global_step})
        if self.log_fn is not None:
            self.log_fn({f"{self.prefix}/{_safe(k)}": v for k, v in numeric.items()}, state.global_step)


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def _common_args(settings, output_dir: Path, seed: int, use_cpu: bool, precision: Precision, min_lr_ratio: float,
                 gradient_checkpointing: bool = False) -> dict:
    scheduler = settings.lr_scheduler
    kwargs = {}
    if scheduler == "cosine" and min_lr_ratio > 0:
        scheduler, kwargs = "cosine_with_min_lr", {"min_lr_rate": min_lr_ratio}
    return dict(
        output_dir=str(output_dir),
        learning_rate=settings.learning_rate,
        lr_scheduler_type=scheduler,
        lr_scheduler_kwargs=kwargs,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        logging_steps=settings.logging_steps,
        logging_first_step=True,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        use_cpu=use_cpu,
        bf16=precision.bf16,
        fp16=precision.fp16,
        dataloader_num_workers=0,
        remove_unused_columns=True,
        # TRL turns checkpointing on by default; it only pays off for large models on GPU.
        gradient_checkpointing=gradient_checkpointing,
    )


def _to_chat(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    out = []
    for r in rows:
        rec = {"prompt": [{"role": "user", "content": r["prompt"]}]}
        for k in keys:
            rec[k] = [{"role": "assistant", "content": r[k]}]
        out.append(rec)
    return out


def _use_cpu(model, use_cpu: bool | None) -> bool:
    if use_cpu is not None:
        return use_cpu
    return not torch.cuda.is_available() or next(model.parameters()).device.type == "cpu"


FP32 = Precision("float32", False, False)


def sft(model, tokenizer, rows: list[dict], settings: SFTSettings, *, peft_config, output_dir: Path,
        max_length: int, seed: int = 0, log_fn: LogFn | None = None, precision: Precision = FP32,
        gradient_checkpointing: bool = False, use_cpu: bool | None = None):
    """Supervised fine-tuning on ``{"prompt", "response"}`` rows; loss on the response tokens only.

    A row's optional ``"kind"`` ("ift", "eft") groups batches under ``settings.batching == "kind"``.

    Returns ``(model, TrainResult)``; the model is a ``PeftModel`` when ``peft_config`` is given.
    Saves the adapter (or full weights) and the tokenizer to ``output_dir/model``.
    """
    result = TrainResult()
    trainer = sft_trainer(model, tokenizer, rows, settings, peft_config=peft_config, output_dir=output_dir,
                          max_length=max_length, seed=seed, precision=precision,
                          gradient_checkpointing=gradient_checkpointing, use_cpu=use_cpu,
                          callbacks=[_Recorder(result, "sft", log_fn)])
    out = trainer.train()
    _finish(result, out, trainer.args, trainer)
    trained = _save_trained(trainer, tokenizer, output_dir / "model")
    tokenizer.padding_side = "left"
    return trained, result


def sft_trainer(model, tokenizer, rows: list[dict], settings: SFTSettings, *, peft_config, output_dir: Path,
                max_length: int, seed: int = 0, precision: Precision = FP32, gradient_checkpointing: bool = False,
                use_cpu: bool | None = None, callbacks=()):
    """The TRL ``SFTTrainer`` :func:`sft` trains with (its dataset is tokenized, loss-masked and ready)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    use_cpu = _use_cpu(model, use_cpu)
    tokenizer.padding_side = "right"
    chat = _to_chat([{"prompt": r["prompt"], "completion": r["response"]} for r in rows], ("completion",))
    if settings.batching == "kind":  # a column, so it follows the rows TRL drops (truncated) or reorders
        chat = [{**c, "kind": r.get("kind", "")} for c, r in zip(chat, rows, strict=True)]
    data = Dataset.from_list(chat)
    args = SFTConfig(**_common_args(settings, output_dir / "trainer", seed, use_cpu, precision, SFT_MIN_LR_RATIO,
                                    gradient_checkpointing),
                     warmup_steps=settings.warmup_ratio, weight_decay=settings.weight_decay,
                     max_length=max_length, completion_only_loss=settings.completion_only_loss,
                     packing=False, dataset_num_proc=None,
                     train_sampling_strategy="group_by_length" if settings.batching == "length" else "random")
    cls = _kind_batched(SFTTrainer, seed) if settings.batching == "kind" else SFTTrainer
    return cls(model=model, args=args, train_dataset=data, processing_class=tokenizer,
               peft_config=peft_config, callbacks=list(callbacks))


def _kind_batched(trainer_cls, seed: int):
    """``trainer_cls`` whose training batches each hold rows of one ``kind`` (srscale.batching).

    The kinds are read from the prepared dataset's ``kind`` column, so rows TRL dropped (fully
    truncated) or shuffled keep theirs; the column is not a model input and never reaches the collator.
    """
    from srscale.batching import GroupedBatchSampler

    class KindBatchedTrainer(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            # train_dataset (if given) is this one with the non-input columns removed, same rows
            return GroupedBatchSampler(list(self.train_dataset["kind"]), self.args.per_device_train_batch_size, seed)

    return KindBatchedTrainer


def _finish(result: TrainResult, out, args, trainer) -> None:
    result.steps, result.runtime_s = out.global_step, out.metrics.get("train_runtime", 0.0)
    world = trainer.accelerator.num_processes
    result.examples_seen = out.global_step * args.per_device_train_batch_size * args.gradient_accumulation_steps * world


def dpo(model, tokenizer, pairs: list[dict], settings: DPOSettings, *, output_dir: Path, max_length: int,
        ref_model=None, peft_config=None, seed: int = 0, log_fn: LogFn | None = None, prefix: str = "dpo",
        precision: Precision = FP32, epochs: float | None = None, gradient_checkpointing: bool = False,
        use_cpu: bool | None = None):
    """DPO on ``{"prompt", "chosen", "rejected"}`` rows (sigmoid loss by default).

    ``model`` may already carry a trainable adapter (iterative DPO continues it; TRL freezes a copy
    as the reference); ``peft_config`` adds a fresh adapter to a plain model instead.
    Saves to ``output_dir/model`` and returns ``(model, TrainResult)``.
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    use_cpu = _use_cpu(model, use_cpu)
    common = _common_args(settings, output_dir / "trainer", seed, use_cpu, precision, DPO_MIN_LR_RATIO,
                          gradient_checkpointing)
    if epochs is not None:
        common["num_train_epochs"] = epochs
    data = Dataset.from_list(_to_chat(pairs, ("chosen", "rejected")))
    args = DPOConfig(**common, beta=settings.beta, loss_type=[settings.loss_type], max_length=max_length,
                     truncation_mode="keep_start", dataset_num_proc=None)
    result = TrainResult()
    trainer = DPOTrainer(model=model, ref_model=ref_model, args=args, train_dataset=data,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[_Recorder(result, prefix, log_fn)])
    out = trainer.train()
    _finish(result, out, args, trainer)
    trained = _save_trained(trainer, tokenizer, output_dir / "model")
    tokenizer.padding_side = "left"
    return trained, result


def _save_trained(trainer, tokenizer, directory: Path):
    """Save the trained adapter (or weights) without TRL's frozen "ref" adapter copy; return the model.

    In one process the "ref" adapter is deleted and the model saved as is. In several, the trainer
    gathers the sharded weights (FSDP, ZeRO-3) and the main process writes them; PEFT puts a second
    adapter in a subfolder named after it, which is then removed.
    """
    import shutil

    trained = trainer.model
    accelerator = trainer.accelerator
    if accelerator.num_processes == 1:
        if "ref" in getattr(trained, "peft_config", {}):
            trained.delete_adapter("ref")
            trained.set_adapter("default")
        save_model(trained, tokenizer, directory)
        return trained
    tmp = _fresh_tmp(directory) if accelerator.is_main_process else _tmp(directory)
    accelerator.wait_for_everyone()
    trainer.save_model(str(tmp))
    if accelerator.is_main_process:
        shutil.rmtree(tmp / "ref", ignore_errors=True)
        (tmp / "training_args.bin").unlink(missing_ok=True)
        tokenizer.save_pretrained(tmp)
        _swap_in(tmp, directory)
    accelerator.wait_for_everyone()
    return trained


def save_model(model, tokenizer, directory: Path) -> None:
    """Save an adapter (PeftModel) or full weights, plus the tokenizer. Written to a temp dir, then moved."""
    tmp = _fresh_tmp(directory)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    _swap_in(tmp, directory)


def _tmp(directory: Path) -> Path:
    return directory.with_name(directory.name + ".tmp")


def _fresh_tmp(directory: Path) -> Path:
    """The empty temp dir a model is written to before it replaces ``directory``."""
    import shutil

    tmp = _tmp(directory)
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def _swap_in(tmp: Path, directory: Path) -> None:
    """Replace ``directory`` with the finished ``tmp`` (a killed save never leaves a half-written model)."""
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
    tmp.rename(directory)


def trainable_delta(before: dict[str, torch.Tensor], model) -> float:
    """Largest absolute change of any trainable parameter since ``before`` (a name -> tensor snapshot)."""
    named = dict(model.named_parameters())
    return max(float((named[n].detach().cpu() - t).abs().max()) for n, t in before.items() if n in named)
