"""Typed configuration: one dataclass per Hydra config group, validated at load.

Hydra composes YAML from ``conf/`` on top of these schemas (registered in the ConfigStore as
``srscale_schema``), so an unknown key or a wrong type fails while composing. Range checks run in
``__post_init__`` when :func:`to_typed` turns the composed DictConfig into these objects; every
violation raises :class:`ConfigError` naming the dotted key, the bad value and what is allowed.

Defaults carry the paper's values (Yuan et al. 2024) where one exists; the CPU profile for the tiny
models lives in the YAML presets, which state only what differs.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from srscale.errors import SrscaleError


class ConfigError(SrscaleError):
    """A configuration value is out of range or inconsistent."""


def _fail(key: str, value: Any, rule: str) -> None:
    raise ConfigError(f"invalid config: {key}={value!r}: {rule}")


def _positive(key: str, value: float | int) -> None:
    if value is None or value <= 0:
        _fail(key, value, "must be > 0")


def _non_negative(key: str, value: float | int) -> None:
    if value is None or value < 0:
        _fail(key, value, "must be >= 0")


def _unit(key: str, value: float, *, open_low: bool = False) -> None:
    if value is None or value > 1 or value < 0 or (open_low and value == 0):
        _fail(key, value, "must be in (0, 1]" if open_low else "must be in [0, 1]")


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        _fail(key, value, f"must be one of {', '.join(allowed)}")


# --------------------------------------------------------------------------------------- model
@dataclass
class TinyArchConfig:
    """Dimensions and build budget of a model srscale builds itself (Llama architecture)."""

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    # Pretraining on the project's own corpus (no judge-format text in it).
    corpus_examples: int = 6000
    pretrain_steps: int = 150
    pretrain_lr: float = 3e-3
    pretrain_batch_size: int = 32
    pretrain_seq_len: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "num_kv_heads",
                     "intermediate_size", "max_position_embeddings", "pretrain_batch_size",
                     "pretrain_seq_len", "corpus_examples"):
            _positive(f"model.tiny.{name}", getattr(self, name))
        _non_negative("model.tiny.pretrain_steps", self.pretrain_steps)
        _positive("model.tiny.pretrain_lr", self.pretrain_lr)
        if self.hidden_size % self.num_heads:
            _fail("model.tiny.hidden_size", self.hidden_size, "must be divisible by model.tiny.num_heads")
        if self.num_heads % self.num_kv_heads:
            _fail("model.tiny.num_kv_heads", self.num_kv_heads, "must divide model.tiny.num_heads")
        if self.vocab_size < 300:
            _fail("model.tiny.vocab_size", self.vocab_size, "must be >= 300 (256 bytes + specials)")


@dataclass
class ResourcesConfig:
    """What one job of this model needs from a cluster (read by srscale's submitit launchers).

    Each figure left null falls back to the launcher's own setting (``hydra.launcher.*``). GPU counts
    assume 80 GB GPUs; ``gpus`` is raised to ``train.distributed.num_processes`` when that is larger.
    """

    gpus: int | None = None  # GPUs on the job's node
    cpus: int | None = None  # CPU cores for the job's one task
    mem_gb: int | None = None  # host memory (not GPU memory: that is model.memory_gb)
    time_min: int | None = None  # wall-time limit; a job that runs out is requeued and resumes

    def __post_init__(self) -> None:
        if self.gpus is not None:
            _non_negative("model.resources.gpus", self.gpus)
        for name in ("cpus", "mem_gb", "time_min"):
            if getattr(self, name) is not None:
                _positive(f"model.resources.{name}", getattr(self, name))


@dataclass
class ModelConfig:
    """Which model a job trains: one srscale builds (``source=tiny``) or a hub id / local path."""

    name: str = MISSING
    source: str = "tiny"  # tiny | hub
    hub_id: str | None = None  # hub id or local directory, for source=hub
    revision: str | None = None
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj"])
    chat_template: str | None = None  # Jinja template for base models that lack one
    trust_remote_code: bool = False
    load_in_4bit: bool = False  # QLoRA through bitsandbytes (GPU only)
    device_map: str | None = None  # e.g. "auto" for large models on GPU
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    max_length: int = 1024  # longest sequence the job feeds the model
    params_millions: float | None = None  # documented size, for tables; measured size is logged
    memory_gb: float | None = None  # documented memory need for LoRA training at this dtype
    tiny: TinyArchConfig | None = None
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)  # per-job cluster request

    def __post_init__(self) -> None:
        _choice("model.source", self.source, ("tiny", "hub"))
        _choice("model.dtype", self.dtype, ("float32", "bfloat16", "float16", "auto"))
        if self.source == "tiny" and self.tiny is None:
            _fail("model.tiny", None, "source=tiny needs a model.tiny block of dimensions")
        if self.source == "hub" and not self.hub_id:
            _fail("model.hub_id", self.hub_id, "source=hub needs a hub id or a local path")
        _positive("model.max_length", self.max_length)


# ---------------------------------------------------------------------------------------- lora
@dataclass
class LoraConfig:
    """LoRA adapter settings. ``enabled=false`` trains all weights (sensible for the tiny presets)."""

    name: str = "r16"
    enabled: bool = True
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None: the model's lora_targets; ["all-linear"] allowed

    def __post_init__(self) -> None:
        if self.r is None or self.r < 1:
            _fail("lora.r", self.r, "must be an integer >= 1 (e.g. lora=r8 or lora.r=16)")
        _positive("lora.alpha", self.alpha)
        if not 0 <= self.dropout < 1:
            _fail("lora.dropout", self.dropout, "must be in [0, 1)")


# ---------------------------------------------------------------------------------------- data
@dataclass
class SuiteSizes:
    """Sizes of the bundled verifiable instruction suite's splits (disjoint by construction)."""

    ift: int = 3000  # the copying tasks are learned after ~20k answer examples (6 epochs of 3,000)
    eft: int = 900
    seed_pairs: int = 200
    eft_eval: int = 200
    heldout: int = 100
    seed_prompts: int = 200
    probe: int = 64  # judge items for the gate probe after SFT


@dataclass
class ColumnsConfig:
    """``data=jsonl``: the file's column for each field srscale reads (null: the file has none).

    ``prompt`` and ``response`` (or ``chosen``, with ``rejected`` for pairs) are needed; ``system`` is
    prefixed to the prompt. All null: the file's own columns with these names.
    """

    prompt: str | None = None
    response: str | None = None
    chosen: str | None = None
    rejected: str | None = None
    system: str | None = None


@dataclass
class DataConfig:
    """Where seed data comes from. ``source=suite`` generates it; others load files or the hub."""

    name: str = "suite"
    source: str = "suite"  # suite | orca_dpo_pairs | oasst | hh_rlhf | alpaca | jsonl
    seed: int = 1234
    # The suite's task families (srscale.suite.families). Default: LEARNABLE_FAMILIES, the three a tiny
    # model learns on a CPU; null: the nine of DEFAULT_FAMILIES, which it does not learn.
    families: list[str] | None = field(default_factory=lambda: ["pick", "repeat", "extreme"])
    sizes: SuiteSizes = field(default_factory=SuiteSizes)
    hub_id: str | None = None
    split: str = "train"
    data_files: list[str] | None = None  # local files with the hub dataset's schema
    columns: ColumnsConfig = field(default_factory=ColumnsConfig)  # data=jsonl: our name -> file column
    max_examples: int | None = None
    eval_fraction: float = 0.1

    def __post_init__(self) -> None:
        _choice("data.source", self.source, ("suite", "orca_dpo_pairs", "oasst", "hh_rlhf", "alpaca", "jsonl"))
        for f in fields(self.sizes):
            _non_negative(f"data.sizes.{f.name}", getattr(self.sizes, f.name))
        _positive("data.sizes.ift", self.sizes.ift)
        if not 0 < self.eval_fraction < 1:
            _fail("data.eval_fraction", self.eval_fraction, "must be in (0, 1)")


# --------------------------------------------------------------------------------------- train
# transformers' lr_scheduler_type values that run with only what srscale passes (no
# lr_scheduler_kwargs, no evaluation during training); tests/test_preflight.py checks them against
# transformers. "cosine" decays to the final rate training.py sets (SFT_MIN_LR_RATIO, DPO_MIN_LR_RATIO).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


SFT_BATCHING = ("kind", "length", "random")


@dataclass
class SFTConfig:
    """Supervised fine-tuning on IFT+EFT. Paper: lr 5.5e-6 decaying to 1.1e-6, batch 16, dropout 0.1."""

    enabled: bool = True
    learning_rate: float = 5.5e-6
    lr_scheduler: str = "cosine"
    epochs: float = 1.0
    max_steps: int = -1  # >0 overrides epochs
    batch_size: int = 16
    grad_accum: int = 1
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    completion_only_loss: bool = True
    # How SFT rows form batches. kind: each batch is IFT rows or EFT rows, at random within its kind
    # (srscale/batching.py; judge rows are ~10x longer than instructions, so this pads little and mixes
    # task families); length: transformers' length-grouped batches (pads least, but batches hold mostly
    # one task family, which the tiny models cannot learn from); random: plain shuffled batches.
    batching: str = "kind"
    logging_steps: int = 5

    def __post_init__(self) -> None:
        _positive("train.sft.learning_rate", self.learning_rate)
        _choice("train.sft.lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _positive("train.sft.epochs", self.epochs)
        _positive("train.sft.batch_size", self.batch_size)
        _positive("train.sft.grad_accum", self.grad_accum)
        _unit("train.sft.warmup_ratio", self.warmup_ratio)
        _positive("train.sft.logging_steps", self.logging_steps)
        _choice("train.sft.batching", self.batching, SFT_BATCHING)


@dataclass
class DPOConfig:
    """DPO on self-judged pairs. Paper: lr 1e-6 -> 1e-7, beta 0.1; small-model study: sigmoid, lr 5e-5."""

    learning_rate: float = 1e-6
    lr_scheduler: str = "cosine"
    beta: float = 0.1
    loss_type: str = "sigmoid"
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 16
    grad_accum: int = 1
    reference: str = "previous"  # previous iteration's model | m1 (the SFT model)
    include_seed_pairs: bool = False
    logging_steps: int = 1

    def __post_init__(self) -> None:
        _positive("train.dpo.learning_rate", self.learning_rate)
        _choice("train.dpo.lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _positive("train.dpo.beta", self.beta)
        _positive("train.dpo.epochs", self.epochs)
        _positive("train.dpo.batch_size", self.batch_size)
        _positive("train.dpo.grad_accum", self.grad_accum)
        _choice("train.dpo.reference", self.reference, ("previous", "m1"))
        _choice("train.dpo.loss_type", self.loss_type, ("sigmoid", "hinge", "ipo", "robust"))


@dataclass
class DistributedConfig:
    """Train the SFT and DPO stages in ``num_processes`` processes (one per GPU; DDP by default, FSDP or
    DeepSpeed ZeRO-3 with an accelerate config). Generation, judging and evaluation stay in the job's
    own process, which may spread a large model over the GPUs with ``model.device_map=auto``."""

    num_processes: int = 1  # 1: train in the job's own process
    accelerate_config: str | None = None  # a file, or a name in conf/accelerate/ (fsdp, deepspeed_zero3)

    def __post_init__(self) -> None:
        _positive("train.distributed.num_processes", self.num_processes)


@dataclass
class TrainConfig:
    name: str = "paper"
    sft: SFTConfig = field(default_factory=SFTConfig)
    dpo: DPOConfig = field(default_factory=DPOConfig)
    seed_dpo_epochs: float = 0.0  # DPO on seed pairs before self-rewarding (small-model study: 6)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# --------------------------------------------------------------------------------------- judge
@dataclass
class JudgeConfig:
    """The judge prompt (``template`` with {prompt} and {response}) and how it is sampled."""

    name: str = MISSING
    source: str = ""  # where the prompt text comes from
    template: str = MISSING
    samples: int = 3  # K judgments per candidate, averaged over the valid ones
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128

    def __post_init__(self) -> None:
        for slot in ("{prompt}", "{response}"):
            if slot not in self.template:
                _fail("judge.template", self.template[:40] + "...", f"must contain the slot {slot}")
        _positive("judge.samples", self.samples)
        _non_negative("judge.temperature", self.temperature)
        _unit("judge.top_p", self.top_p, open_low=True)
        _positive("judge.max_new_tokens", self.max_new_tokens)


# --------------------------------------------------------------------------------- self_reward
@dataclass
class GateConfig:
    """Disqualify a model whose judgments fail to parse more than ``max_consecutive`` times in a row."""

    enabled: bool = True
    max_consecutive: int = 10
    remediation_rounds: int = 0  # extra seed-pair DPO + new probe, up to this many times
    remediation_epochs: float = 6.0

    def __post_init__(self) -> None:
        _non_negative("self_reward.gate.max_consecutive", self.max_consecutive)
        _non_negative("self_reward.gate.remediation_rounds", self.remediation_rounds)
        _positive("self_reward.gate.remediation_epochs", self.remediation_epochs)


@dataclass
class SelfRewardConfig:
    name: str = "paper"
    iterations: int = 3
    prompt_source: str = "self_instruct"  # self_instruct | seed_pool
    # Who writes self-instruct prompts: the current policy (today's default), M1 (the paper: a fixed
    # model), or a path to a saved model (an adapter over this job's base model, or full weights).
    instruct_model: str = "policy"
    prompts_per_iteration: int = 64
    shots_seed: int = 6
    shots_generated: int = 2
    instruct_temperature: float = 0.6
    instruct_top_p: float = 0.9
    instruct_max_new_tokens: int = 64
    rouge_threshold: float = 0.7
    min_prompt_chars: int = 8
    max_prompt_chars: int = 400
    candidates: int = 4
    temperature: float = 0.7
    top_p: float = 0.9
    max_new_tokens: int = 128
    pair_strategy: str = "max_min"  # max_min | max_random
    max_pairs: int | None = None  # small-model study: 20
    batch_size: int = 32  # generation batch
    gate: GateConfig = field(default_factory=GateConfig)

    def __post_init__(self) -> None:
        _non_negative("self_reward.iterations", self.iterations)
        _choice("self_reward.prompt_source", self.prompt_source, ("self_instruct", "seed_pool"))
        if self.instruct_model not in ("policy", "m1") and not self.instruct_model.strip():
            _fail("self_reward.instruct_model", self.instruct_model, "must be policy, m1 or a model directory")
        _choice("self_reward.pair_strategy", self.pair_strategy, ("max_min", "max_random"))
        _positive("self_reward.prompts_per_iteration", self.prompts_per_iteration)
        if self.candidates < 2:
            _fail("self_reward.candidates", self.candidates, "must be >= 2 to form a pair")
        _non_negative("self_reward.temperature", self.temperature)
        _unit("self_reward.top_p", self.top_p, open_low=True)
        _unit("self_reward.instruct_top_p", self.instruct_top_p, open_low=True)
        _unit("self_reward.rouge_threshold", self.rouge_threshold, open_low=True)
        _positive("self_reward.max_new_tokens", self.max_new_tokens)
        _positive("self_reward.batch_size", self.batch_size)
        if self.min_prompt_chars > self.max_prompt_chars:
            _fail("self_reward.min_prompt_chars", self.min_prompt_chars, "must be <= max_prompt_chars")
        if self.max_pairs is not None:
            _positive("self_reward.max_pairs", self.max_pairs)


# ---------------------------------------------------------------------------------- generation
@dataclass
class GenerationConfig:
    """Which engine samples candidates, judgments, prompts and evaluation answers (srscale.sampling).

    ``hf``: transformers ``generate`` in the job's process. ``vllm``: vLLM in its own process and
    Python environment (``vllm_python``; see README, "Generation backends")."""

    name: str = "hf"
    backend: str = "hf"  # hf | vllm
    vllm_python: str | None = None  # None: $SRSCALE_VLLM_PYTHON, else .venv-vllm/bin/python of the checkout
    vllm_gpu_memory_utilization: float = 0.85
    vllm_max_model_len: int | None = None  # None: model.max_length plus the largest generation budget
    torch_threads: int | None = None  # None: the cores this process may use (divided among parallel jobs)
    # vLLM only. enforce_eager None: vLLM's default (torch.compile; CUDA graphs on a GPU), true: eager
    # (a start-up shorter by 20-50 s on the CPU, about 25% fewer tokens/s).
    vllm_enforce_eager: bool | None = None
    # What the engine does before a training stage: auto = sleep on CUDA, keep on the CPU | sleep | restart | keep
    vllm_release: str = "auto"
    # Sequences per request when the gate may stop generation (it stops within one request of the trip).
    # None: one batch of vLLM's scheduler (its max_num_seqs: 256 on the CPU, 256-1024 on GPUs).
    vllm_chunk_sequences: int | None = None
    vllm_cpu_kv_cache_gib: int = 2  # CPU build: memory for the KV cache (VLLM_CPU_KVCACHE_SPACE)
    # Tokens per KV-cache block (prefixes are shared in whole blocks). None: 32 on the CPU (vLLM's CPU
    # default, 128, shares less of the judge rubric), vLLM's own default on a GPU.
    vllm_block_size: int | None = None
    # CPU only: top-p from the 64 most likely tokens when they hold the nucleus, instead of sorting the
    # vocabulary every step (the same tokens are kept; srscale.vllm_worker.top_p_from_candidates).
    vllm_fast_top_p: bool = True

    def __post_init__(self) -> None:
        _choice("generation.backend", self.backend, ("hf", "vllm"))
        _unit("generation.vllm_gpu_memory_utilization", self.vllm_gpu_memory_utilization, open_low=True)
        _choice("generation.vllm_release", self.vllm_release, ("auto", "sleep", "restart", "keep"))
        if self.vllm_chunk_sequences is not None:
            _positive("generation.vllm_chunk_sequences", self.vllm_chunk_sequences)
        _positive("generation.vllm_cpu_kv_cache_gib", self.vllm_cpu_kv_cache_gib)
        if self.vllm_block_size is not None:
            _positive("generation.vllm_block_size", self.vllm_block_size)
        if self.vllm_max_model_len is not None:
            _positive("generation.vllm_max_model_len", self.vllm_max_model_len)
        if self.torch_threads is not None:
            _positive("generation.torch_threads", self.torch_threads)


# ---------------------------------------------------------------------------------------- eval
@dataclass
class LmEvalConfig:
    enabled: bool = False
    tasks: list[str] = field(default_factory=lambda: ["arc_easy", "arc_challenge", "hellaswag", "siqa", "piqa",
                                                     "gsm8k", "mmlu", "openbookqa", "nq_open"])
    mode: str = "local"  # hub: lm-eval's own task definitions | local: same tasks over local files
    data_dir: str | None = None  # local mode: folder laid out like shared/data
    limit: int | None = 50
    num_fewshot: int | None = None
    batch_size: int = 8

    def __post_init__(self) -> None:
        _choice("eval.lm_eval.mode", self.mode, ("hub", "local"))
        if self.limit is not None:
            _positive("eval.lm_eval.limit", self.limit)


@dataclass
class MTBenchConfig:
    enabled: bool = False
    question_file: str | None = None  # FastChat question.jsonl; None: the hub copy
    reference_file: str | None = None
    judge_prompts_file: str | None = None
    judge: str = "local"  # openai | endpoint | local (a Hugging Face judge model)
    judge_model: str = "gpt-4"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    # The local judge of MT-Bench and head-to-head, one model for every stage of a job (a judge that
    # changed with the stage would confound the comparison): None = M1, the SFT model; or a path to a
    # saved model (full weights).
    local_judge_path: str | None = None
    max_questions: int | None = None
    max_new_tokens: int = 256
    judge_max_tokens: int = 512


@dataclass
class HeadToHeadConfig:
    enabled: bool = False
    max_prompts: int = 50
    alpaca_eval_file: str | None = None  # AlpacaEval model_outputs.json with reference outputs
    max_new_tokens: int = 128


@dataclass
class EvalConfig:
    """Which evaluations run at which stages. ``data_root`` (a folder laid out like srscale's test
    data: ``mt_bench/``, ``alpaca_eval/``, ``arc/``, ...) fills every evaluation file left unset."""

    name: str = "fast"
    # base: M0 (the model before SFT) | sft: M1 | seed_dpo | iterations: after each | final: after the last
    stages: list[str] = field(default_factory=lambda: ["base", "sft", "iterations"])
    data_root: str | None = None
    reward_model: bool = True
    task_accuracy: bool = True
    max_items: int = 200
    lm_eval: LmEvalConfig = field(default_factory=LmEvalConfig)
    mtbench: MTBenchConfig = field(default_factory=MTBenchConfig)
    head_to_head: HeadToHeadConfig = field(default_factory=HeadToHeadConfig)

    def __post_init__(self) -> None:
        for s in self.stages:
            _choice("eval.stages[]", s, ("base", "sft", "seed_dpo", "iterations", "final"))
        _positive("eval.max_items", self.max_items)


# ------------------------------------------------------------------------------------ tracking
@dataclass
class TrackingConfig:
    name: str = "mlflow"
    backend: str = "mlflow"  # mlflow | none
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd
    experiment: str = "srscale"
    log_models: bool = True  # log adapters as artifacts

    def __post_init__(self) -> None:
        _choice("tracking.backend", self.backend, ("mlflow", "none"))


# ---------------------------------------------------------------------------------------- root
@dataclass
class Config:
    model: ModelConfig = MISSING
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    judge: JudgeConfig = MISSING
    self_reward: SelfRewardConfig = field(default_factory=SelfRewardConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str = "${oc.env:SRSCALE_CACHE,${oc.env:HOME,.}/.cache/srscale}"
    output_dir: str = "${hydra:runtime.output_dir}"
    run_name: str | None = None

    def __post_init__(self) -> None:
        _choice("device", self.device, ("auto", "cpu", "cuda"))


def register_configs() -> None:
    """Register the root schema so ``conf/config.yaml`` composes on top of it."""
    ConfigStore.instance().store(name="srscale_schema", node=Config)


def to_typed(cfg: DictConfig) -> Config:
    """Resolve and convert a composed config into :class:`Config`, running every range check."""
    obj = OmegaConf.to_object(cfg)
    if not is_dataclass(obj):  # pragma: no cover - guards against a missing schema
        raise ConfigError("invalid config: the root config is not backed by the srscale schema")
    return obj  # type: ignore[return-value]


def flatten(cfg: Config | DictConfig | dict, prefix: str = "") -> dict[str, Any]:
    """Flatten a config into dotted keys (for MLflow params). Long strings are kept whole."""
    node = OmegaConf.structured(cfg) if is_dataclass(cfg) else cfg
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    out: dict[str, Any] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        else:
            out[key] = value

    walk(container, prefix)
    return out


# ------------------------------------------------------------------------- command-line overrides
def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (tp, False)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _value_fits(tp: Any, optional: bool, value: Any) -> bool:
    if value is None:
        return optional
    if isinstance(value, str) and value.startswith("${"):
        return True  # an interpolation; resolved (and checked) later
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return not isinstance(value, (list, dict))
    return True


def check_override(key: str, values: list[Any], root: type = Config) -> str | None:
    """Check a dotted ``key`` and its value(s) against the schema; a one-line problem, or None.

    Pure: walks the dataclass types (not a composed config), so it runs before Hydra composes and
    turns Hydra's multi-line "Key 'lr' not in 'SFTConfig'" into one line with a suggestion. Keys under
    a free-form mapping or list (``data.columns.*``) and interpolations are left to Hydra.
    """
    node: Any = root
    parts = key.split(".")
    for depth, part in enumerate(parts):
        node, _ = _unwrap_optional(node)
        if not is_dataclass(node):
            return None  # inside a dict / list field: anything goes
        hints = typing.get_type_hints(node)
        names = [f.name for f in fields(node)]
        if part not in names:
            where = ".".join(parts[:depth]) or "the top level"
            close = difflib.get_close_matches(part, names, n=1, cutoff=0.6)
            hint = f"did you mean {'.'.join([*parts[:depth], close[0]])}? " if close else ""
            return (f"unknown config key {key}: {where} has no '{part}'; {hint}keys there: {', '.join(names)} "
                    "(python -m srscale --help lists them all)")
        node = hints[part]
    tp, optional = _unwrap_optional(node)
    for value in values:
        if not _value_fits(tp, optional, value):
            return (f"invalid config: {key}={value!r}: must be {_type_name(tp)}"
                    f"{' or null' if optional else ''}")
    return None
