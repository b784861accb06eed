"""Every sweep in sweeps/ expands under multirun into jobs whose configs compose and validate."""

from __future__ import annotations

import copy

import pytest
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from hydra_plugins.srscale_plugins.sweeper import SrscaleSweeper
from srscale.config import Config, to_typed
from srscale.package_files import CONF_DIR, SWEEPS_DIR
from test_config import _setup

SWEEPS = sorted(p.stem for p in SWEEPS_DIR.glob("*.yaml"))
# What each study sweeps (axis -> values): a sweep file changed by mistake fails here.
AXES = {
    "small_model_study": {"model": ["tinystories1m", "phi1", "tinyllama", "llama7b"], "experiment": ["cs224n"],
                          "data": ["orca_dpo_pairs"]},
    "paper": {"model": ["llama7b", "llama70b"], "experiment": ["paper"], "data": ["oasst"], "lora": ["r16"]},
    "tiny_ladder": {"model": ["tiny_300k", "tiny_1m", "tiny_4m", "tiny_16m"]},
    "cpu_study": {"model": ["tiny_300k", "tiny_1m", "tiny_4m"], "seed": ["0", "1", "2"]},
    "lora_rank": {"lora": ["full", "r8", "r16", "r16_all"]},
    "iterations": {"self_reward.iterations": ["1", "2", "3", "5"]},
    "modern_ladder": {"model": ["smollm2_135m", "smollm2_360m", "qwen2_5_0_5b", "qwen2_5_1_5b", "smollm2_1_7b",
                                "qwen2_5_7b", "llama3_1_8b"], "lora": ["r16"], "train": ["paper"]},
}


@pytest.fixture(autouse=True)
def _fresh_global_hydra():
    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def sweep_jobs(name: str, extra: list[str]) -> tuple[Hydra, object, list[list[str]]]:
    """The sweep's primary config and its jobs' overrides, expanded the way srscale's sweeper does."""
    _setup()
    hydra = Hydra.create_main_hydra2("srscale", create_config_search_path(str(CONF_DIR)))
    cfg = hydra.compose_config("config", [f"+sweeps={name}", *extra], run_mode=RunMode.MULTIRUN)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    task = list(OmegaConf.to_container(cfg.hydra.overrides.task))
    overrides = OverridesParser.create().parse_overrides([*params, *task])
    (jobs,) = SrscaleSweeper.split_arguments(overrides, None)
    return hydra, cfg, jobs


def test_every_sweep_is_listed() -> None:
    assert sorted(AXES) == SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_every_job_under_multirun(name: str) -> None:
    extra = ["model=tiny_4m"] if "model" not in AXES[name] else []
    hydra, cfg, jobs = sweep_jobs(name, extra)
    assert cfg.hydra.sweeper._target_.endswith("SrscaleSweeper")
    expected = 1
    for values in AXES[name].values():
        expected *= len(values)
    assert len(jobs) == expected
    dirs = set()
    excluded = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    identities = {tuple(sorted(o for o in job if o.split("=", 1)[0].lstrip("+~") not in excluded)) for job in jobs}
    for job in jobs:
        job_cfg = hydra.config_loader.load_sweep_config(cfg, job)
        for key, values in AXES[name].items():
            group = key in job_cfg.hydra.runtime.choices  # a config group, else a plain key (seed, a.b)
            assert str(job_cfg.hydra.runtime.choices[key] if group else OmegaConf.select(job_cfg, key)) in values
        job_only = copy.deepcopy(job_cfg)  # what Hydra hands a job: its config without the hydra node
        with read_write(job_only), open_dict(job_only):
            del job_only["hydra"]
        job_only.output_dir = "/tmp/srscale-test"  # ${hydra:runtime.output_dir} outside a running job
        typed = to_typed(job_only)
        assert isinstance(typed, Config)
        dirs.add(job_cfg.hydra.job.override_dirname)
    assert len(dirs) == len(identities)  # one directory per configuration (excluded keys aside)
