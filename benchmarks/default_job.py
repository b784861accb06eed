"""The default run's pieces for benchmarks: its composed config, its seed data and its base model.

Composes ``conf/`` exactly as ``python -m srscale`` does with no overrides (plus any given), builds the
bundled suite's seed data as the pipeline's data stage does, and builds (or reuses) the tiny model in
``$SRSCALE_CACHE`` (default ``~/.cache/srscale``).
"""

from __future__ import annotations

import os
from pathlib import Path


def default_config(*overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from srscale.__main__ import CONF_DIR, REPO_DIR, _jobdir
    from srscale.config import register_configs, to_typed

    register_configs()
    if not OmegaConf.has_resolver("srscale_jobdir"):
        OmegaConf.register_new_resolver("srscale_jobdir", _jobdir)
    if not OmegaConf.has_resolver("srscale_repo"):
        OmegaConf.register_new_resolver("srscale_repo", lambda: str(REPO_DIR))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "output_dir=/tmp/srscale-bench"])
    return to_typed(cfg)


def cache_dir() -> str:
    return os.environ.get("SRSCALE_CACHE", str(Path("~/.cache/srscale").expanduser()))


def default_data(cfg):
    from srscale.suite.build import build_suite

    return build_suite(cfg.data.sizes, seed=cfg.data.seed, judge_template=cfg.judge.template,
                       families=cfg.data.families)


def base_model_path(cfg) -> str:
    from srscale.models import model_path

    return model_path(cfg.model, cache_dir(), cfg.judge.template)


def load(cfg, path: str | None = None):
    """(model, tokenizer) of the default model: the base weights, or a saved stage model at ``path``."""
    from srscale.models import load_model, load_tokenizer

    base = base_model_path(cfg)
    tok = load_tokenizer(cfg.model, base)
    model = load_model(cfg.model, path or base, "cpu")
    return model, tok
