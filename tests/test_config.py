"""Every config option composes against the typed schema; bad values fail with one line naming the key."""

from __future__ import annotations

import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from srscale.__main__ import CONF_DIR, _jobdir
from srscale.config import Config, ConfigError, check_override, flatten, register_configs, to_typed

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"accelerate"})


def _setup() -> None:
    register_configs()
    if not OmegaConf.has_resolver("srscale_jobdir"):
        OmegaConf.register_new_resolver("srscale_jobdir", _jobdir)


def compose_cfg(overrides: list[str]) -> Config:
    _setup()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*overrides, "output_dir=/tmp/srscale-test"])
    return to_typed(cfg)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes(group: str, option: str) -> None:
    cfg = compose_cfg([f"{group}={option}"])
    assert isinstance(cfg, Config)
    if group != "experiment":
        assert getattr(cfg, group).name in (option, cfg.model.name if group == "model" else option)


def test_default_is_tiny_model_with_suite_data() -> None:
    cfg = compose_cfg([])
    assert cfg.model.name == "tiny" and cfg.model.source == "tiny"
    assert cfg.data.source == "suite"
    assert cfg.self_reward.gate.max_consecutive == 10
    assert "{prompt}" in cfg.judge.template and "{response}" in cfg.judge.template


def test_default_suite_and_model_are_the_learnable_ones() -> None:
    """The default learns its tasks (docs/cpu_study.md): the copying families on tiny_300k."""
    from srscale.suite.families import LEARNABLE_FAMILIES

    cfg = compose_cfg([])
    assert cfg.data.families == list(LEARNABLE_FAMILIES)
    assert cfg.model.tiny == compose_cfg(["model=tiny_300k"]).model.tiny
    assert cfg.train.sft.batching == "kind"
    assert compose_cfg(["data.families=null"]).data.families is None  # the nine of DEFAULT_FAMILIES


def test_paper_values_are_schema_defaults() -> None:
    cfg = compose_cfg(["train=paper", "self_reward=paper", "judge=paper"])
    assert cfg.train.sft.learning_rate == 5.5e-6
    assert cfg.train.dpo.learning_rate == 1e-6 and cfg.train.dpo.beta == 0.1
    assert cfg.self_reward.candidates == 4 and cfg.self_reward.temperature == 0.7
    assert cfg.self_reward.shots_seed == 6 and cfg.self_reward.shots_generated == 2
    assert cfg.self_reward.rouge_threshold == 0.7 and cfg.judge.samples == 3
    assert "additive 5-point" in cfg.judge.template


@pytest.mark.parametrize("override,key", [
    ("lora.r=-1", "lora.r"),
    ("train.sft.learning_rate=0", "train.sft.learning_rate"),
    ("train.dpo.beta=-0.1", "train.dpo.beta"),
    ("self_reward.candidates=1", "self_reward.candidates"),
    ("self_reward.top_p=1.5", "self_reward.top_p"),
    ("self_reward.gate.max_consecutive=-2", "self_reward.gate.max_consecutive"),
    ("judge.samples=0", "judge.samples"),
    ("model.tiny.hidden_size=130", "model.tiny.hidden_size"),
    ("train.dpo.reference=m7", "train.dpo.reference"),
])
def test_impossible_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        compose_cfg([override])
    message = str(err.value)
    assert key in message and "\n" not in message


@pytest.mark.parametrize("override", ["lora.rank=3", "model.hiden_size=3", "train.sft.lr=1e-3"])
def test_misspelt_keys_fail_at_compose(override: str) -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException) as err:
        compose_cfg([override])
    assert override.split("=")[0].split(".")[-1] in str(err.value.__cause__ or err.value)


def test_wrong_type_fails() -> None:
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_cfg(["lora.r=sixteen"])


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(compose_cfg([]))
    assert flat["lora.r"] == 16 and flat["model.name"] == "tiny"
    assert "self_reward.gate.max_consecutive" in flat


def test_jobdir_names() -> None:
    assert _jobdir("") == "default"
    assert _jobdir("lora=r8,model=tiny") == "lora=r8,model=tiny"
    long = ",".join(f"data.sizes.k{i}={i}" for i in range(40))
    assert len(_jobdir(long)) <= 120 and _jobdir(long) == _jobdir(long)
    assert _jobdir(long) != _jobdir(long + ",x=1")


def _cli(*args: str):
    return subprocess.run([sys.executable, "-m", "srscale", *args], capture_output=True, text=True, timeout=120)


def test_cli_help_lists_groups() -> None:
    out = _cli("--help")
    assert out.returncode == 0
    for group in ("model", "lora", "data", "train", "judge", "self_reward", "eval", "tracking"):
        assert f"{group}:" in out.stdout


def test_cli_bad_value_is_one_line(tmp_path) -> None:
    out = _cli("lora.r=-1", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["srscale: invalid config: lora.r=-1: must be an integer >= 1 (e.g. lora=r8 or lora.r=16)"]


def test_cli_unknown_model_is_one_line_naming_options(tmp_path) -> None:
    out = _cli("model=no_such_model", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "model=no_such_model" in lines[0] and "tiny_1m" in lines[0]


def test_cli_unknown_option_inside_a_sweep(tmp_path) -> None:
    out = _cli("-m", "lora=r8,r99", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 2 and "lora=r99" in out.stderr and "r16" in out.stderr


@pytest.mark.parametrize("key,values,expect", [
    ("train.sft.lernrate", [1], "did you mean train.sft.learning_rate?"),
    ("lora.rank", [3], "lora has no 'rank'"),
    ("modle.name", ["x"], "did you mean model?"),
    ("self_reward.gate.max_consecutiv", [3], "did you mean self_reward.gate.max_consecutive?"),
    ("lora.r", ["sixteen"], "must be an integer"),
    ("lora.r", [8, 2.5], "lora.r=2.5: must be an integer"),
    ("train.sft.learning_rate", ["abc"], "must be a number"),
    ("lora.enabled", ["yes"], "must be true or false"),
    ("seed", [None], "seed=None: must be an integer"),
])
def test_check_override_names_the_problem(key: str, values: list, expect: str) -> None:
    problem = check_override(key, values)
    assert problem is not None and expect in problem and "\n" not in problem


@pytest.mark.parametrize("key,values", [
    ("train.sft.learning_rate", [1e-4, 3]),  # an integer is a fine number
    ("self_reward.max_pairs", [None, 20]),  # optional
    ("model.tiny.vocab_size", [512]),  # through an optional dataclass
    ("data.columns.prompt", ["q"]),  # a free-form mapping
    ("data.data_files", [["a.jsonl", "b.jsonl"]]),
    ("run_name", ["${model.name}"]),
    ("model.name", [123]),  # numbers are fine strings
])
def test_check_override_accepts_valid_values(key: str, values: list) -> None:
    assert check_override(key, values) is None


@pytest.mark.parametrize("args,expect", [
    (["train.sft.lernrate=0"], "unknown config key train.sft.lernrate"),
    (["lora.r=sixteen"], "invalid config: lora.r='sixteen': must be an integer"),
    (["-m", "train.sft.learning_rate=1e-4,abc"], "train.sft.learning_rate='abc'"),
])
def test_cli_misspelt_key_or_wrong_type_is_one_line(tmp_path, args: list[str], expect: str) -> None:
    out = _cli(*args, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expect in lines[0], out.stderr
