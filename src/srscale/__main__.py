"""Hydra entry: ``python -m srscale [group=option ...] [key=value ...]`` (``-m`` for a sweep).

Composes ``conf/`` (shipped inside the package, :mod:`srscale.package_files`) over the typed schema,
validates it, and hands the typed config to the pipeline. Before any of that, the command line is
checked (unknown group options, misspelt keys, wrong types); after composing, :mod:`srscale.preflight`
checks what the job needs (directories, tracking store, judge, data files) before Hydra creates the
job's directory. User errors (bad values, missing models or data) print one line and exit 2; a sweep
goes on past a failing job and reports it at the end.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from srscale.package_files import CONF_DIR, SWEEPS_DIR, missing_config_problem

MAX_JOBDIR = 120
# Flags that change where Hydra finds the primary config: the pre-checks below would look elsewhere.
_CONFIG_FLAGS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")


def _jobdir(override_dirname: str) -> str:
    """A job's directory name: its overrides (``lora=r8,model=tiny``), or ``default`` when none.

    Long override lists are cut and suffixed with a hash of the whole list, so the name stays a
    valid file name and still maps one configuration to one directory (which is what resume needs).
    """
    import hashlib

    name = override_dirname.replace("/", "_").replace(os.sep, "_")
    if len(name) > MAX_JOBDIR:
        name = f"{name[:MAX_JOBDIR - 13]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"
    return name if name else "default"


def _config_repository(overrides: list) -> Any:
    """Hydra's view of every config group: conf/, the search path of conf/config.yaml and of the
    overrides (``hydra.searchpath=[...]``), and the options Hydra and its installed plugins register
    (``hydra/launcher=joblib``, ``hydra/job_logging=disabled``). Uses Hydra 1.3's internal
    ConfigRepository, the one its own composition uses (pyproject pins hydra-core < 1.4)."""
    from hydra._internal.config_repository import ConfigRepository
    from hydra._internal.utils import create_config_search_path
    from omegaconf import OmegaConf

    search_path = create_config_search_path(str(CONF_DIR))  # also discovers the plugins
    entries = list(OmegaConf.select(OmegaConf.load(CONF_DIR / "config.yaml"), "hydra.searchpath") or [])
    for override in overrides:
        if override.key_or_group == "hydra.searchpath" and isinstance(override.value(), list):
            entries += override.value()
    for entry in entries:
        if isinstance(entry, str) and "${" not in entry:
            search_path.append("srscale", entry)
    return ConfigRepository(config_search_path=search_path)


def _option_problem(repo: Any, override: Any) -> str | None:
    """An option of a config group that does not exist (``model=no_such``, ``lora=r8,r99``), or None."""
    group = override.key_or_group
    try:
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [None if override.value() is None else override.get_value_element_as_str()])
    except Exception:  # noqa: BLE001 - a glob or range: Hydra expands it
        return None
    known = sorted(repo.get_group_options(group))
    for option in values:
        if option not in (None, "null", "") and option not in known:
            where = (f" (files in conf/{group}/)" if (CONF_DIR / group).is_dir()
                     else " (files in sweeps/)" if group == "sweeps" and SWEEPS_DIR.is_dir() else "")
            return f"unknown option {group}={option}; choose one of: {', '.join(known)}{where}"
    return None


def _key_problem(key: str, value: Any) -> str | None:
    """A misspelt key or a value of the wrong type, a mapping checked key by key (``data.columns={...}``)."""
    from srscale.config import check_override

    if isinstance(value, dict):
        problem = check_override(key, [])  # the key itself
        if problem:
            return problem
        for sub, item in value.items():
            problem = _key_problem(f"{key}.{sub}", item)
            if problem:
                return problem
        return None
    return check_override(key, [value])


def _check_overrides(argv: list[str]) -> str | None:
    """One line naming an unknown ``group=option``, a misspelt key or a value of the wrong type, or None.

    Hydra reports these itself in several lines. Sweeps (``group=a,b``, ``key=1,x``) are checked value
    by value; what cannot be parsed here, and keys below ``hydra.``, are left to Hydra.
    """
    if any(arg.split("=", 1)[0] in _CONFIG_FLAGS for arg in argv):
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    overrides = []
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            try:
                overrides += parser.parse_overrides([arg])
            except Exception:  # noqa: BLE001 - malformed syntax: Hydra's own message explains it
                continue
    if not overrides:
        return None
    repo = _config_repository(overrides)
    for override in overrides:
        key = override.key_or_group
        if override.is_delete():
            continue
        if repo.group_exists(key):
            problem = _option_problem(repo, override)
        elif (override.is_add() or override.package is not None or key == "hydra"
              or key.startswith("hydra.")):
            continue
        else:
            try:
                values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
            except Exception:  # noqa: BLE001 - e.g. a glob sweep; Hydra expands it
                continue
            problem = next(filter(None, (_key_problem(key, v) for v in values)), None)
        if problem:
            return problem
    return None


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("transformers", "datasets", "huggingface_hub", "mlflow", "alembic", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # lm-eval warns once per request whose context is cut to the model's length: thousands of lines
    # for a small model on MMLU or HellaSwag. The cut is lm-eval's documented behaviour.
    logging.getLogger("lm_eval.models.huggingface").setLevel(logging.ERROR)
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def main() -> None:
    from srscale.multirun import check_launcher, take_failures

    problem = missing_config_problem() or check_launcher(sys.argv[1:]) or _check_overrides(sys.argv[1:])
    if problem:
        print(f"srscale: {problem}", file=sys.stderr)
        sys.exit(2)
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from srscale.config import register_configs

    if not OmegaConf.has_resolver("srscale_jobdir"):
        OmegaConf.register_new_resolver("srscale_jobdir", _jobdir)
    register_configs()
    _quiet_libraries()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def task(cfg: DictConfig) -> object:
        from hydra.core.hydra_config import HydraConfig

        from srscale.config import to_typed
        from srscale.errors import SrscaleError
        from srscale.preflight import check, remove_unused_job_dir

        hc = HydraConfig.get()
        overrides = ",".join(hc.overrides.task)
        choices = {k: str(v) for k, v in hc.runtime.choices.items()
                   if not k.startswith("hydra") and v not in (None, "null", "None")}
        started = False
        try:
            # A single job was checked before Hydra made its directory (hydra_callbacks.Preflight);
            # again here for a sweep's jobs, at no cost for a single one (probes are remembered).
            typed = to_typed(cfg)
            check(typed)
            from srscale.pipeline import run_job
            from srscale.tracking import ensure_store

            ensure_store(typed.tracking)
            from srscale.resources import configure_job_threads

            configure_job_threads(typed.generation.torch_threads)
            started = True
            summary = run_job(typed, overrides, choices)
        except SrscaleError as exc:
            if not started:  # nothing was computed: leave no directory Hydra made for nothing
                remove_unused_job_dir(Path(hc.runtime.output_dir))
            if hc.mode is not None and hc.mode.name == "MULTIRUN":
                # A job that started is recorded (FAILED run, traceback artifact); the sweep goes on
                # and exits non-zero at the end, listing each failed job in one line. The outcome
                # travels in the job's return value: launchers may run jobs in other processes.
                from srscale.multirun import JobFailed

                logging.getLogger("srscale").error("job failed: %s", exc)
                return JobFailed(str(exc))
            print(f"srscale: {exc}", file=sys.stderr)
            sys.exit(2)
        logging.getLogger("srscale").info(
            "job done: %s (gate %s, %s iterations) in %s", typed.model.name, summary.get("gate_outcome"),
            summary.get("iterations_completed"), typed.output_dir)

    task()
    failed_jobs = take_failures()  # recorded by srscale's sweeper (hydra_plugins.srscale_plugins)
    if failed_jobs:
        for line in failed_jobs:
            print(f"srscale: job failed: {line}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
