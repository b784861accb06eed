"""Hydra entry: ``python -m srscale [group=option ...] [key=value ...]`` (``-m`` for a sweep).

Composes ``conf/`` over the typed schema, validates it, and hands the typed config to the pipeline.
User errors (bad values, missing models or data) print one line and exit 2; a sweep goes on past a
failing job and reports it at the end.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_DIR / "conf"


MAX_JOBDIR = 120


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


def _check_group_options(argv: list[str]) -> str | None:
    """One line naming an unknown ``group=option`` (and the options there are), or None.

    Hydra reports these itself in several lines; this catches the common case first. Sweeps
    (``group=a,b``) are checked option by option.
    """
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key, value = arg.split("=", 1)
        group = key.lstrip("+~")
        folder = REPO_DIR / "sweeps" if group == "sweeps" else CONF_DIR / group
        if "." in group or "/" in group or not folder.is_dir() or value in ("null", ""):
            continue
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        for option in value.split(","):
            if option not in known:
                return (f"srscale: unknown option {group}={option}; choose one of: {', '.join(known)} "
                        f"(files in {folder.relative_to(REPO_DIR)}/)")
    return None


def _check_keys(argv: list[str]) -> str | None:
    """One line naming a misspelt key or a value of the wrong type (``train.sft.lernrate=1``,
    ``lora.r=sixteen``), or None. Sweeps are checked value by value; the rest is left to Hydra."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from srscale.config import check_override

    parser = OverridesParser.create()
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - malformed syntax: Hydra's own message explains it
            continue
        key = override.key_or_group
        if (override.is_add() or override.is_delete() or override.package is not None
                or key.split(".")[0].split("/")[0] == "hydra" or key in groups):
            continue
        try:
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except Exception:  # noqa: BLE001 - e.g. a glob sweep; Hydra expands it
            continue
        problem = check_override(key, values)
        if problem:
            return f"srscale: {problem}"
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
    if not CONF_DIR.is_dir():
        print(f"srscale: config directory {CONF_DIR} not found; install srscale from a checkout with "
              "`pip install -e .`", file=sys.stderr)
        sys.exit(2)
    from srscale.multirun import check_launcher, take_failures

    problem = check_launcher(sys.argv[1:]) or _check_group_options(sys.argv[1:]) or _check_keys(sys.argv[1:])
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(2)
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from srscale.config import register_configs

    if not OmegaConf.has_resolver("srscale_jobdir"):
        OmegaConf.register_new_resolver("srscale_jobdir", _jobdir)
    if not OmegaConf.has_resolver("srscale_repo"):
        OmegaConf.register_new_resolver("srscale_repo", lambda: str(REPO_DIR))
    register_configs()
    _quiet_libraries()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def task(cfg: DictConfig) -> object:
        from hydra.core.hydra_config import HydraConfig

        from srscale.config import to_typed
        from srscale.errors import SrscaleError

        hc = HydraConfig.get()
        overrides = ",".join(hc.overrides.task)
        choices = {k: str(v) for k, v in hc.runtime.choices.items()
                   if not k.startswith("hydra") and v not in (None, "null", "None")}
        try:
            typed = to_typed(cfg)
            from srscale.pipeline import run_job
            from srscale.resources import configure_job_threads

            configure_job_threads(typed.generation.torch_threads)
            from srscale.tracking import ensure_store

            ensure_store(typed.tracking)
            summary = run_job(typed, overrides, choices)
        except SrscaleError as exc:
            if hc.mode is not None and hc.mode.name == "MULTIRUN":
                # The job is recorded (FAILED run, traceback artifact); the sweep goes on and
                # exits non-zero at the end, listing each failed job in one line. The outcome
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
