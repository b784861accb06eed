"""Load a model and its tokenizer for a job: the built-in tiny family, a hub id, or a local path.

Every source ends in ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``.
Weights that are neither cached nor reachable raise one :class:`SrscaleError` line naming the model
and how to provide it, never a traceback from inside huggingface_hub.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from srscale.config import LoraConfig, ModelConfig
from srscale.errors import SrscaleError

log = logging.getLogger(__name__)

# For base models whose tokenizer has no chat template (TinyStories, Phi-1, Llama-2 base, ...).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SrscaleError("device=cuda but no CUDA device is visible; use device=auto or device=cpu")
    return device


def model_path(cfg: ModelConfig, cache_dir: str, judge_template: str | None = None) -> str:
    """Where the base weights come from: the built tiny model's directory, or the hub id / path.

    For the tiny family the judge template joins the tokenizer's training text (never the model's
    pretraining corpus), so the rubric costs few tokens.
    """
    if cfg.source == "tiny":
        from srscale.tinymodel import ensure_tiny_model

        extra = (judge_template,) if judge_template else ()
        return str(ensure_tiny_model(cfg.name, cfg.tiny, cache_dir, extra))
    return str(cfg.hub_id)


def _missing_model_error(cfg: ModelConfig, exc: Exception) -> SrscaleError:
    hub_id = cfg.hub_id
    if hub_id and (hub_id.startswith(("/", ".", "~")) or os.sep in hub_id and Path(hub_id).exists()):
        return SrscaleError(f"model={cfg.name}: cannot load a model from the local path '{hub_id}' "
                            f"({type(exc).__name__}); point model.hub_id at a directory made by save_pretrained")
    home = os.environ.get("HF_HOME", "~/.cache/huggingface")
    return SrscaleError(
        f"model={cfg.name}: weights for '{hub_id}' are not in the local cache ({home}) and the hub is "
        f"unreachable; download them where there is network (huggingface-cli download {hub_id}) and set "
        f"HF_HOME to that cache, or set model.hub_id=/path/to/local/copy")


def _offline_kwargs(cfg: ModelConfig, path: str) -> dict:
    """``local_files_only=True`` when a hub id must come from the cache because the hub is unreachable
    (checked in about a second), so a missing model fails at once instead of after minutes of retries."""
    if cfg.source != "hub" or Path(path).expanduser().exists():
        return {}
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return {"local_files_only": True}
    from huggingface_hub import constants

    from srscale.data_sources import hub_reachable

    return {} if hub_reachable(constants.ENDPOINT) else {"local_files_only": True}


def load_tokenizer(cfg: ModelConfig, path: str):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                            **_offline_kwargs(cfg, path))
    except (OSError, ValueError) as exc:
        raise _missing_model_error(cfg, exc) from None
    if cfg.chat_template:  # an explicit template wins (base models may ship untrained chat tokens)
        tok.chat_template = with_bos(cfg.chat_template, tok)
    elif not tok.chat_template:
        tok.chat_template = with_bos(DEFAULT_CHAT_TEMPLATE, tok)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # generation pads on the left; trainers set their own side
    return tok


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer starts a plain encoding with its BOS token (Llama-2, TinyLlama: yes;
    GPT-2 style, ChatML: no). A model is trained and evaluated on what its own tokenizer produces."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0] == bos


def with_bos(template: str, tokenizer) -> str:
    """A chat template srscale supplies, made to start with ``{{ bos_token }}`` when the tokenizer adds
    a BOS by default. Generation and TRL's trainers tokenize templated text with
    ``add_special_tokens=False`` (so a template with its own BOS gets exactly one); a template that
    lacked it would feed such models no ``<s>`` at all."""
    if not adds_bos(tokenizer) or "bos_token" in template:
        return template
    return "{{ bos_token }}" + template


def load_model(cfg: ModelConfig, path: str, device: str | None, adapter: str | Path | None = None,
               trainable_adapter: bool = False, dtype: str | None = None):
    """Load the base weights (and optionally a saved LoRA adapter) onto ``device``.

    ``device=None`` leaves the weights where ``from_pretrained`` put them, for a trainer running in
    several processes to shard (FSDP, ZeRO-3) them. ``dtype`` overrides ``cfg.dtype`` (training
    loads full fine-tuning in float32, see :func:`srscale.training.training_precision`)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"revision": cfg.revision, "trust_remote_code": cfg.trust_remote_code,
                    "dtype": _DTYPES[dtype or cfg.dtype], **_offline_kwargs(cfg, path)}
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.load_in_4bit:
        if device is not None and not str(device).startswith("cuda"):
            raise SrscaleError(f"model={cfg.name}: load_in_4bit needs a CUDA device (bitsandbytes); "
                               "set model.load_in_4bit=false on CPU")
        from transformers import BitsAndBytesConfig

        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise SrscaleError(f"model={cfg.name}: load_in_4bit needs bitsandbytes; pip install -e '.[gpu]'") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    if cfg.device_map:
        kwargs["device_map"] = cfg.device_map
    try:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as exc:
        if "does not appear to have" in str(exc) or "not a valid" in str(exc) or cfg.source == "hub":
            raise _missing_model_error(cfg, exc) from None
        raise
    if not cfg.device_map and device is not None:
        model.to(device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
    return model


def is_adapter_dir(path: str | Path | None) -> bool:
    """True for a directory a LoRA adapter was saved to (as opposed to full weights)."""
    return path is not None and (Path(path) / "adapter_config.json").exists()


def load_stage_weights(cfg: ModelConfig, base_path: str, source: str | Path | None, device: str | None,
                       trainable_adapter: bool = False, dtype: str | None = None):
    """A saved stage model: an adapter over the base weights, or full weights; the base when None."""
    if is_adapter_dir(source):
        return load_model(cfg, base_path, device, adapter=source, trainable_adapter=trainable_adapter, dtype=dtype)
    return load_model(cfg, str(source) if source else base_path, device, dtype=dtype)


def count_base_parameters(cfg: ModelConfig, path: str) -> int:
    """Parameters of the base model, counted on the meta device (no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, revision=cfg.revision, trust_remote_code=cfg.trust_remote_code,
                                        **_offline_kwargs(cfg, path))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)
    return count_parameters(model)


def lora_targets(model_cfg: ModelConfig, lora_cfg: LoraConfig) -> list[str] | str:
    targets = lora_cfg.target_modules or model_cfg.lora_targets
    return "all-linear" if list(targets) == ["all-linear"] else list(targets)


def peft_config(model_cfg: ModelConfig, lora_cfg: LoraConfig):
    """The PEFT LoRA config for a job, or None for full fine-tuning."""
    if not lora_cfg.enabled:
        return None
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=lora_targets(model_cfg, lora_cfg), task_type="CAUSAL_LM")


def count_parameters(model) -> int:
    """Parameters of the base model (LoRA adapter weights excluded)."""
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)


def check_lora_targets(model, targets: list[str] | str) -> list[str]:
    """Names of requested LoRA target modules that the model lacks (empty when all exist)."""
    if targets == "all-linear":
        return []
    leaf_names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in leaf_names]
