"""NLP benchmarks through lm-eval, in process, on a stage's in-memory model (plain or PEFT-wrapped).

Two data modes (``eval.lm_eval.mode``):

- ``hub``: lm-eval's own task definitions and hub datasets, exactly as a user with network runs them. Any
  lm-eval task name is accepted; srscale's names below map to lm-eval's (``siqa`` is ``social_iqa``).
- ``local``: srscale's copies of the same tasks (``lm_eval_tasks/*.yaml``: same prompts, choices, targets,
  metrics, filters and generation settings as lm-eval 0.4.13) reading files under ``eval.lm_eval.data_dir``
  laid out as ``lm_eval_tasks.utils.LAYOUT`` says (the shared/data layout). Differences from hub mode come
  only from the files: ARC uses the dev split, HellaSwag the derived text format, and tasks whose
  training split is not stored draw few-shot examples from the scored split (never the scored item).

Metrics come back flat as ``{"<task>/<metric>[.<filter>]": value}`` with srscale task names (``arc_easy/acc``,
``gsm8k/exact_match.strict-match``, ``mmlu_stem/acc``), the same keys in both modes.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from srscale.config import LmEvalConfig
from srscale.errors import SrscaleError
from srscale.evaluation.lm_eval_tasks.utils import LAYOUT

TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
LOCAL_PREFIX = "srscale_"

# srscale name -> (lm-eval built-in task or group, srscale local task or group)
TASKS: dict[str, tuple[str, str]] = {
    "arc_easy": ("arc_easy", "srscale_arc_easy"),
    "arc_challenge": ("arc_challenge", "srscale_arc_challenge"),
    "hellaswag": ("hellaswag", "srscale_hellaswag"),
    "siqa": ("social_iqa", "srscale_siqa"),
    "piqa": ("piqa", "srscale_piqa"),
    "gsm8k": ("gsm8k", "srscale_gsm8k"),
    "mmlu": ("mmlu", "srscale_mmlu"),
    "openbookqa": ("openbookqa", "srscale_openbookqa"),
    "nq_open": ("nq_open", "srscale_nq_open"),
}
assert set(TASKS) == set(LAYOUT)
_HUB_TO_SRSCALE = {hub: name for name, (hub, _) in TASKS.items()}

RESULTS_FILE = "lm_eval_results.json"


def lm_eval_task_names(tasks: list[str], mode: str) -> list[str]:
    """The lm-eval task (or group) names that run ``tasks`` (srscale names) in ``mode``."""
    if mode not in ("hub", "local"):
        raise SrscaleError(f"eval.lm_eval.mode={mode!r}: choose hub or local")
    names = []
    for task in tasks:
        if task in TASKS:
            names.append(TASKS[task][0 if mode == "hub" else 1])
        elif mode == "hub":
            names.append(task)  # any other lm-eval task, as lm-eval names it
        else:
            raise SrscaleError(
                f"eval.lm_eval.tasks: {task!r} has no local definition; local mode runs {', '.join(TASKS)} "
                f"(other lm-eval tasks need eval.lm_eval.mode=hub)"
            )
    return names


def srscale_task_name(lm_eval_name: str) -> str:
    """Metric-key name of an lm-eval task or group: srscale's name in either mode."""
    name = lm_eval_name.removeprefix(LOCAL_PREFIX)
    return _HUB_TO_SRSCALE.get(name, name)


@functools.lru_cache(maxsize=1)
def _hub_task_manager():
    """lm-eval's full task index takes seconds to build: build it once per process."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def task_manager(mode: str, data_dir: str | Path | None = None):
    """lm-eval's TaskManager: built-in tasks (hub) or only srscale's local tasks with ``data_dir`` as metadata."""
    if mode == "hub":
        return _hub_task_manager()
    if not data_dir:
        raise SrscaleError(
            "eval.lm_eval.mode=local needs eval.lm_eval.data_dir=<folder laid out like shared/data "
            "(arc/, hellaswag/, piqa/, siqa/, gsm8k/, mmlu/, openbookqa/, nq_open/)>"
        )
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        raise SrscaleError(f"eval.lm_eval.data_dir={data_dir} is not a folder")
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                       metadata={"data_dir": str(data_dir.resolve())})


def load_tasks(names: list[str], manager, mode: str) -> list[Any]:
    """Build each lm-eval task or group (this loads its data), so a failure names its task."""
    built = []
    for name in names:
        try:
            loaded = manager.load([name])
        except SrscaleError:
            raise
        except KeyError as err:
            raise SrscaleError(f"eval.lm_eval.tasks: lm-eval knows no task or group {name!r}") from err
        except Exception as err:  # noqa: BLE001 - any dataset failure becomes one user-facing line
            if mode != "hub":
                raise
            cause = (str(err).strip().splitlines() or [""])[0][:200]
            raise SrscaleError(
                f"lm-eval task {name}: its hub dataset could not be loaded ({type(err).__name__}: {cause}); "
                f"without network use eval.lm_eval.mode=local eval.lm_eval.data_dir=<folder laid out like shared/data>"
            ) from err
        groups = loaded.get("groups") or {}
        if name in groups:
            built.append(groups[name])  # a group carries its tasks and its aggregate metrics
        else:
            built.extend(loaded["tasks"].values())  # a task, or the tasks a tag names
    return built


_UNSAFE = re.compile(r"[^A-Za-z0-9_\-./]")


def flatten_results(results: dict[str, Any]) -> dict[str, float]:
    """lm-eval's ``results`` section as ``{"<srscale task>/<metric>[.<filter>]": float}``, MLflow-safe keys.

    The filter ``none`` is dropped (``arc_easy/acc``, ``arc_easy/acc_stderr``); others follow a dot
    (``gsm8k/exact_match.strict-match``). Non-numeric and non-finite values ("N/A" stderrs) are left out.
    """
    flat: dict[str, float] = {}
    for task, metrics in results.get("results", {}).items():
        prefix = srscale_task_name(task)
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            metric, _, filt = key.partition(",")
            name = metric if filt in ("", "none") else f"{metric}.{filt}"
            flat[_UNSAFE.sub("_", f"{prefix}/{name}")] = float(value)
    return flat


@contextmanager
def _preserved_state(model) -> Iterator[None]:
    """lm-eval seeds the global RNGs and puts the model in eval mode: give the caller's state back."""
    import numpy as np
    import torch

    training = bool(getattr(model, "training", False))
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        if training:
            model.train()


class _DropCustomDatasetNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


@contextmanager
def _quiet_custom_dataset_notice() -> Iterator[None]:
    """lm-eval warns, once per task built from a custom loader, how to pass metadata on its CLI: noise here."""
    logger, notice = logging.getLogger("lm_eval.api.task"), _DropCustomDatasetNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def run_lm_eval(
    model,
    tokenizer,
    cfg: LmEvalConfig,
    out_dir: Path | None = None,
    *,
    gen_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Run ``cfg.tasks`` with lm-eval on an in-memory model; return flat metrics.

    ``model`` is a transformers PreTrainedModel or a peft PeftModel (scored with its adapter), used where it
    lies (its device, its dtype). ``gen_kwargs`` updates the generation settings of generate_until tasks
    (e.g. ``{"max_gen_toks": 64}``). With ``out_dir``, lm-eval's results JSON goes to
    ``out_dir/lm_eval_results.json``.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable

    names = lm_eval_task_names(list(cfg.tasks), cfg.mode)
    if not names:
        raise SrscaleError("eval.lm_eval.tasks is empty: name at least one task")
    manager = task_manager(cfg.mode, cfg.data_dir)

    with _preserved_state(model), _quiet_custom_dataset_notice():
        tasks = load_tasks(names, manager, cfg.mode)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=cfg.batch_size)
        results = lm_eval.simple_evaluate(
            model=lm,
            tasks=tasks,
            num_fewshot=cfg.num_fewshot,
            limit=cfg.limit,
            task_manager=manager,
            gen_kwargs=gen_kwargs or None,
            log_samples=False,
        )
    if results is None:  # not rank 0
        return {}
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False)
        (out_dir / RESULTS_FILE).write_text(text, encoding="utf-8")
    return flatten_results(results)
