"""The one orchestrator: stage order, where each stage's outputs live, resume, and all tracking.

Job directory layout (``cfg.output_dir``)::

    job.json               the configuration this directory belongs to (a re-run must match it)
    job_state.json         running / done / disqualified / failed, for ``srscale.sweep status``
    data/                  seed data splits (jsonl)
    sft/model/             M1: the SFT adapter (or full weights) + tokenizer; train_rows.jsonl
    probe/                 gate probe judgments (+ probe_<r>/, remediation_<r>/ when remediating)
    seed_dpo/model/        optional DPO on the seed pairs (small-model study)
    iter_<t>/              one self-rewarding iteration, one sub-stage per folder:
        prompts/ candidates/ judging/ pairs/ dpo/model/
    eval/<stage>/          evaluation outputs per stage (base, sft, seed_dpo, iter_<t>)
    tracking.json          the MLflow run of each store this job was tracked in
    summary.json           written last; a re-run with more iterations extends the job in place

Every stage ends by writing ``DONE.json`` (its metrics, its cost, the line counts of its outputs and the
records it depends on, :mod:`srscale.stagebook`); a re-run skips stages that are complete and current
and redoes any whose outputs are damaged, so a killed job resumes where it stopped. Metrics are logged
to a run exactly once per (key, step). Sampling is seeded per stage from ``cfg.seed``.

Stages generate through the job's engine (:mod:`srscale.engines`), judge through
:mod:`srscale.self_judging`, and are evaluated by :mod:`srscale.evaluation.runner`; this module only
orders them and records what they did.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import platform
import random
import subprocess
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from srscale import jobstate, judging, selfinstruct
from srscale import pairs as pairs_mod
from srscale.config import Config, flatten
from srscale.engines import ModelCache, make_engine
from srscale.errors import SrscaleError
from srscale.sampling import SamplingParams, TokenCount, render_chat, user_turn
from srscale.seed_data import SeedData, read_jsonl, write_json, write_jsonl
from srscale.self_judging import judge_items, scores_by_item
from srscale.stagebook import Cost, Job, mark_done, measure, rel, resolve, stage_record
from srscale.tracking import make_tracker, store_key
from srscale.train_stage import TrainSpec, count_train_tokens, local_placement, run_spec

log = logging.getLogger(__name__)

# Keys that do not change what a job computes; they are left out of job.json's fingerprint (and the
# job directory's name), so a job can move stores, caches or grow its iteration count in place.
UNFINGERPRINTED = ("tracking", "cache_dir", "output_dir", "run_name", "self_reward.iterations",
                   "generation.torch_threads", "model.resources")


# ----------------------------------------------------------------------------- job identity (pure)
def fingerprint(cfg: Config) -> dict[str, Any]:
    """The flattened configuration a job directory belongs to (without :data:`UNFINGERPRINTED` keys)."""
    flat = flatten(cfg)
    return {k: v for k, v in flat.items() if not any(k == u or k.startswith(u + ".") for u in UNFINGERPRINTED)}


def fingerprint_diff(old: dict[str, Any], new: dict[str, Any], limit: int = 3) -> list[str]:
    """``key: old -> new`` for the keys that differ (at most ``limit``)."""
    keys = sorted(set(old) | set(new))
    diff = [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys if old.get(k) != new.get(k)]
    return diff[:limit] + ([f"and {len(diff) - limit} more"] if len(diff) > limit else [])


def config_id(cfg: Config) -> str:
    """Runs with the same id differ only by seed: what the analysis aggregates over."""
    fp = {k: v for k, v in fingerprint(cfg).items() if k != "seed"}
    return hashlib.sha1(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()[:12]


def config_label(cfg: Config, protocol: str | None) -> str:
    """``tiny_4m|r16`` (+ ``|cs224n`` under an experiment preset): the configuration in words."""
    lora = cfg.lora.name if cfg.lora.enabled else "full"
    return "|".join([cfg.model.name, lora] + ([protocol] if protocol else []))


def run_name(cfg: Config, protocol: str | None) -> str:
    """``tiny_4m|r16|seed=1``: the MLflow UI's compare view reads without opening params."""
    if cfg.run_name:
        return cfg.run_name
    parts = [cfg.model.name, cfg.lora.name if cfg.lora.enabled else "full", f"seed={cfg.seed}"]
    return "|".join(parts + ([protocol] if protocol else []))


def merge_variants(tag: str | None, t: int) -> str:
    """The iteration counts a job was asked for so far (``"1,3"`` + 5 -> ``"1,3,5"``)."""
    seen = {int(x) for x in (tag or "").split(",") if x.strip().isdigit()}
    return ",".join(str(x) for x in sorted(seen | {t}))


# ----------------------------------------------------------------------------------- job lock
@contextmanager
def job_lock(root: Path):
    """Only one process runs a job directory at a time; a second one waits (e.g. the T=1 and T=3 jobs
    of an iteration-count sweep launched in parallel extend one directory, one after the other)."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is running the job in %s; waiting for it", root)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------- the job
def environment_tags(model_id: str, n_params: int | None, overrides: str) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"model_id": model_id, "model_params": n_params, "torch_version": torch.__version__,
            "transformers_version": transformers.__version__, "trl_version": trl.__version__,
            "peft_version": peft.__version__, "git_commit": commit, "hydra_overrides": overrides or "(defaults)",
            "python_version": platform.python_version()}


def device_tag(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return f"cpu:{platform.processor() or platform.machine()}"


def _check_job_dir(root: Path, cfg: Config) -> None:
    """A job directory belongs to one configuration; a different one must not resume from it."""
    path = root / "job.json"
    fp = fingerprint(cfg)
    if path.exists():
        try:
            old = json.loads(path.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            old = None
        if old is not None and old != json.loads(json.dumps(fp, default=str)):
            diff = "; ".join(fingerprint_diff(old, json.loads(json.dumps(fp, default=str))))
            raise SrscaleError(f"{root} holds a job of another configuration ({diff}); move it away, or run "
                               f"this one elsewhere with hydra.run.dir=DIR")
        if old is not None:
            return
    write_json(path, {"fingerprint": fp})


def _open_tracker(job_root: Path, cfg: Config, name: str):
    """This job's run in the store it is given: resumed if the job was tracked there, else new."""
    path = job_root / "tracking.json"
    raw = json.loads(path.read_text()) if path.exists() else {}
    runs = dict(raw.get("runs", {}))
    key = store_key(cfg.tracking) if cfg.tracking.backend != "none" else "none"
    resume = runs.get(key) or raw.get("run_id")  # ``run_id``: the layout before stores were keyed
    tracker = make_tracker(cfg.tracking, run_name=name, resume_id=resume)
    if tracker.run_id and runs.get(key) != tracker.run_id:
        runs[key] = tracker.run_id
        write_json(path, {"runs": runs})
    return tracker


def run_job(cfg: Config, overrides: str = "", choices: dict[str, str] | None = None) -> dict:
    """Run, resume or extend one job. Returns the summary. Raises on errors after recording them."""
    root = Path(cfg.output_dir)
    with job_lock(root):
        return _run_locked(cfg, root, overrides, choices or {})


def _run_locked(cfg: Config, root: Path, overrides: str, choices: dict[str, str]) -> dict:
    from srscale.launch import check

    check(cfg.train.distributed)
    _check_job_dir(root, cfg)
    protocol = choices.get("experiment") or None
    if protocol in ("null", "None"):
        protocol = None
    tracker = _open_tracker(root, cfg, run_name(cfg, protocol))
    job = Job(cfg, root, tracker)
    jobstate.write_state(root, "running", overrides=overrides or "(defaults)", run_id=tracker.run_id,
                         tracking_uri=getattr(tracker, "tracking_uri", None), stage="start")
    try:
        summary = _run(job, overrides, protocol, choices)
    except BaseException as exc:
        reason = (f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__])[0][:500]
        jobstate.write_state(root, "killed" if isinstance(exc, KeyboardInterrupt) else "failed", reason=reason)
        tb = traceback.format_exc()
        (root / "traceback.txt").write_text(tb)
        tracker.log_text(tb, "traceback.txt")
        tracker.set_tags({"status_reason": reason})
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    summary_path = root / "summary.json"
    write_json(summary_path, summary)
    (root / "traceback.txt").unlink(missing_ok=True)
    jobstate.write_state(root, "done" if summary.get("gate_outcome") == "passed" else "disqualified",
                         iterations_completed=summary.get("iterations_completed"),
                         gate_stage=summary.get("gate_stage"), stage="end")
    tracker.log_artifact(summary_path)
    tracker.end("FINISHED")
    return summary


@dataclass
class Ctx:
    """What the stages of one job share."""

    job: Job
    data: SeedData
    models: ModelCache
    engine: Any
    n_params: int
    m1: Path | None = None  # the SFT model (None: SFT disabled, M1 is the base)
    summary: dict = field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        return self.job.cfg


def _run(job: Job, overrides: str, protocol: str | None, choices: dict[str, str]) -> dict:
    from srscale.models import count_base_parameters, model_path, resolve_device

    cfg, tracker = job.cfg, job.tracker
    tracker.log_params(flatten(cfg))
    tracker.log_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)), "config/resolved.yaml")
    t_requested = cfg.self_reward.iterations
    tracker.set_tags({"config_id": config_id(cfg), "config_label": config_label(cfg, protocol),
                      "protocol": protocol or "default", "iteration_variants":
                      merge_variants(tracker.get_tag("iteration_variants"), t_requested),
                      **{f"choice.{k}": v for k, v in sorted(choices.items())}})

    data = stage_data(job)
    device = resolve_device(cfg.device)
    base_path = model_path(cfg.model, cfg.cache_dir, cfg.judge.template)
    models = ModelCache(cfg, base_path, device)
    check_judge_budget(cfg, models.tokenizer())
    n_params = count_base_parameters(cfg.model, base_path)
    engine = make_engine(cfg, models, job.root)
    tracker.set_tags({**environment_tags(cfg.model.hub_id or cfg.model.name, n_params, overrides),
                      "device": device_tag(device), "generation_backend": engine.backend})
    if tracker.get_tag("generation_version") is None and tracker.run_id is not None:
        tracker.set_tags({"generation_version": engine.version})  # vLLM: asks its worker, so only once
    ctx = Ctx(job, data, models, engine, n_params)
    ctx.summary = {"model": cfg.model.name, "params": n_params, "iterations_completed": 0,
                   "iterations_requested": t_requested}
    try:
        return _stages(ctx)
    finally:
        engine.close()
        models.drop()


def _stages(ctx: Ctx) -> dict:
    from srscale.evaluation.runner import evaluate_stage

    cfg, job = ctx.cfg, ctx.job
    stages = cfg.eval.stages
    if "base" in stages:
        evaluate_stage(ctx, None, "base", step=0, prefix="base")
    if cfg.data.source == "oasst" and not ctx.data.eft and cfg.train.sft.enabled:
        ctx.data = stage_oasst_eft(ctx)
    ctx.m1 = stage_sft(ctx)
    if "sft" in stages:  # M1 itself, before any remediation or seed-pair DPO
        evaluate_stage(ctx, ctx.m1, "sft", step=0)

    # Gate probe, with optional remediation (extra DPO on the seed pairs, then a new probe).
    model_dir = ctx.m1
    gate_cfg = cfg.self_reward.gate
    probe = stage_probe(ctx, model_dir, "probe")
    round_ = 0
    while probe["tripped"] and round_ < gate_cfg.remediation_rounds:
        round_ += 1
        model_dir = stage_seed_dpo(ctx, model_dir, f"remediation_{round_}", gate_cfg.remediation_epochs)
        probe = stage_probe(ctx, model_dir, f"probe_{round_}")
    if probe["tripped"]:
        return disqualify(ctx, probe, stage=probe["stage"])
    job.tracker.set_tags({"gate_probe": "passed"})

    if cfg.train.seed_dpo_epochs > 0 and ctx.data.seed_pairs:
        model_dir = stage_seed_dpo(ctx, model_dir, "seed_dpo", cfg.train.seed_dpo_epochs)
        if "seed_dpo" in stages:
            evaluate_stage(ctx, model_dir, "seed_dpo", step=0, prefix="seed_dpo_eval")

    # A directory extended to more iterations by an earlier request keeps reporting all of them.
    T = max(cfg.self_reward.iterations, _iterations_done(job.root))
    for t in range(1, T + 1):
        result = stage_iteration(ctx, model_dir, t)
        if result.get("tripped"):
            return disqualify(ctx, result, stage=f"iter_{t}")
        model_dir = resolve(job.root, result.get("model_dir"))
        ctx.summary["iterations_completed"] = t
        if "iterations" in stages or ("final" in stages and t == T):
            evaluate_stage(ctx, model_dir, f"iter_{t}", step=t)
        log_cumulative_cost(ctx, t)
    job.tracker.set_tags({"gate_outcome": "passed"})
    log_total_cost(ctx)
    ctx.summary.update(gate_outcome="passed", final_model=rel(job.root, model_dir))
    return ctx.summary


def _iterations_done(root: Path) -> int:
    try:
        summary = json.loads((root / "summary.json").read_text())
    except (OSError, ValueError):
        return 0
    return int(summary.get("iterations_completed") or 0) if summary.get("gate_outcome") == "passed" else 0


def disqualify(ctx: Ctx, record: dict, stage: str) -> dict:
    """The gate tripped: tag the run, keep the failing outputs, end the job normally."""
    gate = record["gate"]
    job = ctx.job
    job.tracker.set_tags({"gate_outcome": "disqualified", "gate_stage": stage,
                          "gate_longest_streak": gate["longest_streak"], "gate_judgments": gate["total"],
                          "gate_failures": gate["failures"], "gate_tripped_at": gate["tripped_at"]})
    job.tracker.log_artifact(job.root / record["failing_file"], "gate")
    log.warning("gate: model disqualified at %s after %s consecutive unparseable judgments (%s judged)",
                stage, gate["longest_streak"], gate["total"])
    log_total_cost(ctx)
    ctx.summary.update(gate_outcome="disqualified", gate_stage=stage, gate=gate)
    return ctx.summary


# ------------------------------------------------------------------------------------- cost
def _cost_metrics(kind: str, cost: dict) -> dict[str, float]:
    return {f"cost/{kind}/{k}": v for k, v in cost.items() if v is not None}


def record_cost(ctx: Ctx, stage: str, cost: dict | None) -> None:
    if cost is not None:
        ctx.job.costs[stage] = cost


def log_cumulative_cost(ctx: Ctx, t: int) -> None:
    """``cost/cumulative/*`` at step t: everything spent to make the model of step t."""
    costs = [c for name, c in ctx.job.costs.items() if not name.startswith("eval")]
    total = Cost.total(costs)
    ctx.job.log_points({"cost/cumulative/flops": total["flops"], "cost/cumulative/wall_s": total["wall_s"]}, step=t)


def log_total_cost(ctx: Ctx) -> None:
    """``cost/total/*`` (evaluations included) at the step of the last iteration the job completed, so a
    job extended to more iterations later logs its new totals at a new step."""
    total = Cost.total(ctx.job.costs.values())
    ctx.summary["cost"] = total
    step = ctx.summary.get("iterations_completed", 0)
    ctx.job.log_points(_cost_metrics("total", total), step=step)
    if step == 0:  # no iteration ran: the model of step 0 cost everything before it
        log_cumulative_cost(ctx, 0)


# --------------------------------------------------------------------------------- validation
def judge_words_asked(template: str) -> int | None:
    """The word limit a judge prompt asks the justification to keep ("up to 100 words"), or None."""
    import re

    found = re.findall(r"\bup\s+to\s+(\d+)\s+words\b", template, flags=re.IGNORECASE)
    return max(int(n) for n in found) if found else None


# A justification in the register judges write, to measure how many tokens a word costs a tokenizer.
_SAMPLE_JUSTIFICATION = (
    "The response is relevant to the user's question and gives a correct, direct answer. It is clearly "
    "written and well organized, though it could be more concise and it does not explain how the result "
    "was obtained, which would make it more useful to the user."
)
_SCORE_LINE = "\nScore: 5"


def judge_tokens_needed(template: str, tokenizer) -> int | None:
    """Tokens a judgment needs to say what the prompt asks: the asked-for words at this tokenizer's
    rate on an English justification, plus the score line and the end token. None: no word limit."""
    words = judge_words_asked(template)
    if words is None:
        return None
    sample_words = len(_SAMPLE_JUSTIFICATION.split())
    per_word = len(tokenizer(_SAMPLE_JUSTIFICATION, add_special_tokens=False)["input_ids"]) / sample_words
    tail = len(tokenizer(_SCORE_LINE, add_special_tokens=False)["input_ids"]) + 1
    return int(words * per_word + 0.999) + tail


def check_judge_budget(cfg: Config, tokenizer) -> None:
    """Refuse a judge budget below what the judge prompt asks for (one line, before any compute)."""
    needed = judge_tokens_needed(cfg.judge.template, tokenizer)
    if needed is not None and cfg.judge.max_new_tokens < needed:
        raise SrscaleError(
            f"judge.max_new_tokens={cfg.judge.max_new_tokens} is below what judge.template asks for (up to "
            f"{judge_words_asked(cfg.judge.template)} words of justification and the score: about {needed} "
            f"tokens with this model's tokenizer); set judge.max_new_tokens={needed} or more, or a judge "
            "prompt that asks for fewer words")


# ---------------------------------------------------------------------------------------- stages
def stage_data(job: Job) -> SeedData:
    cfg, d = job.cfg, job.dir("data")
    from srscale.seed_data import SPLITS

    rec = stage_record(d)
    if rec is None:
        if cfg.data.source == "suite":
            from srscale.suite.build import build_suite

            data = build_suite(cfg.data.sizes, seed=cfg.data.seed, judge_template=cfg.judge.template,
                               families=cfg.data.families)
        else:
            from srscale.data_sources import load_seed_data

            data = load_seed_data(cfg.data, cfg.judge.template)
        data.save(d)
        sample = job.dir("data/sample")
        for split in ("ift", "eft", "seed_pairs", "eft_eval", "heldout", "probe"):
            write_jsonl(sample / f"{split}.jsonl", getattr(data, split)[:20])
        rec = mark_done(d, {"counts": data.counts()}, outputs=[f"{s}.jsonl" for s in SPLITS])
    data = SeedData.load(d)
    job.log_once(d, {f"data/{k}": v for k, v in data.counts().items()}, step=0,
                 artifacts=[(d / "sample", "seed_data_sample")])
    job.records["data"] = rec
    return data


def _input(job: Job, name: str) -> dict | None:
    return job.records.get(name)


def _remember(job: Job, name: str, rec: dict) -> dict:
    job.records[name] = rec
    return rec


def stage_sft(ctx: Ctx) -> Path | None:
    """SFT on IFT+EFT -> M1. With ``train.sft.enabled=false`` M1 is the base model (returns None)."""
    cfg, job = ctx.cfg, ctx.job
    if not cfg.train.sft.enabled:
        return None
    d = job.dir("sft")
    inputs = [_input(job, "data"), _input(job, "oasst_eft")]
    rec = stage_record(d, inputs)
    if rec is None:
        job.heartbeat("sft")
        rows = ([{**r, "kind": "ift"} for r in ctx.data.ift]
                + [{"prompt": r["prompt"], "response": r["response"], "kind": "eft"} for r in ctx.data.eft])
        random.Random(cfg.seed).shuffle(rows)
        cost = Cost()
        with measure(cost):
            result = train(ctx, _spec(ctx, "sft", rows, d, policy_dir=None))
        tokens, cut = count_train_tokens(ctx.models.tokenizer(), "sft", rows, cfg.model.max_length)
        cost.add_training(_trained_tokens(tokens, len(rows), result), ctx.n_params)
        losses = [(int(r["step"]), r["loss"]) for r in result.history if "loss" in r]
        rec = mark_done(d, {"steps": result.steps, "runtime_s": result.runtime_s, "examples": len(rows),
                            "rows_truncated": cut, "loss_first": losses[0][1] if losses else None,
                            "loss_last": losses[-1][1] if losses else None, "loss_curve": losses,
                            "precision": result.precision, "cost": cost.to_dict()},
                        outputs=["train_rows.jsonl"], models=["model"], inputs=inputs)
    _remember(job, "sft", rec)
    record_cost(ctx, "sft", rec.get("cost"))
    metrics = {"sft/steps": rec["steps"], "sft/runtime_s": rec["runtime_s"], "sft/examples": rec["examples"],
               "sft/rows_truncated": rec["rows_truncated"], **_cost_metrics("sft", rec["cost"])}
    artifacts = [(d / "model", "sft_model")] if cfg.tracking.log_models else []
    job.log_once(d, metrics, step=0, series={"sft/loss": [tuple(p) for p in rec["loss_curve"]]},
                 artifacts=artifacts)
    return d / "model"


def _trained_tokens(tokens_per_epoch: int, n_rows: int, result) -> int:
    """Tokens trained over every epoch: one epoch's tokens scaled by the rows the trainer consumed."""
    if not n_rows or not result.examples_seen:
        return tokens_per_epoch
    return int(tokens_per_epoch * result.examples_seen / n_rows)


def stage_oasst_eft(ctx: Ctx) -> SeedData:
    """The paper's EFT for OASST: an IFT-only SFT model judges human-ranked replies; judgments whose
    scores order the replies as the human ranks do are kept (balanced by score) as EFT for M1."""
    from srscale.data_sources import build_oasst_eft, oasst_ranked_items

    cfg, job, data = ctx.cfg, ctx.job, ctx.data
    d = job.dir("oasst_eft")
    inputs = [_input(job, "data")]
    rec = stage_record(d, inputs)
    if rec is None:
        job.heartbeat("oasst_eft")
        cost = Cost()
        with measure(cost):
            base = job.dir("oasst_eft/sft_ift")
            base_rec = stage_record(base, inputs)
            if base_rec is None:
                result = train(ctx, _spec(ctx, "sft", data.ift, base, policy_dir=None))
                mark_done(base, {"steps": result.steps}, models=["model"], inputs=inputs)
            items = oasst_ranked_items(cfg.data)
            flat = [(it["prompt"], reply) for it in items for reply in it["replies"]]
            judged = judge_items(ctx.engine.sampler(base / "model"), cfg.judge, flat, samples=1, seed=cfg.seed + 3,
                                 desc="oasst EFT judging", max_input_tokens=cfg.model.max_length)
            cost.add_generation(judged.tokens, ctx.n_params)
        by_item = {r["item"]: r for r in judged.records}
        judgments, k = [], 0
        for it in items:
            judgments.append([{"text": by_item[k + j]["text"], "score": by_item[k + j]["score"]}
                              for j in range(len(it["replies"]))])
            k += len(it["replies"])
        rows = build_oasst_eft(items, judgments, cfg.judge.template, cfg.seed)
        write_jsonl(d / "judgments.jsonl", judged.records)
        write_jsonl(d / "eft.jsonl", rows)
        rec = mark_done(d, {"prompts": len(items), "judged": len(judged.records),
                            "parse_rate": judging.parse_rate(judged.scores()), "eft_rows": len(rows),
                            "cost": cost.to_dict()},
                        outputs=["judgments.jsonl", "eft.jsonl"], inputs=inputs)
    _remember(job, "oasst_eft", rec)
    record_cost(ctx, "oasst_eft", rec.get("cost"))
    data.eft = read_jsonl(d / "eft.jsonl")
    job.log_once(d, {f"oasst_eft/{k}": v for k, v in rec.items() if k in ("prompts", "judged", "parse_rate", "eft_rows")},
                 step=0, artifacts=[(d / "eft.jsonl", "oasst_eft")])
    return data


def stage_probe(ctx: Ctx, model_dir: Path | None, name: str) -> dict:
    """Judge the probe set once per item, in data order, with the gate on; stop the moment it trips."""
    cfg, job, data = ctx.cfg, ctx.job, ctx.data
    d = job.dir(name)
    inputs = [_input(job, "data"), _input(job, _model_stage(name))]
    rec = stage_record(d, inputs)
    if rec is None:
        job.heartbeat(name)
        gate = judging.ConsecutiveFailureGate(cfg.self_reward.gate.max_consecutive)
        items = [(p["prompt"], p["response"]) for p in data.probe]
        if not items:
            raise SrscaleError("the gate probe set is empty: set data.sizes.probe > 0 (or self_reward.gate.enabled=false)")
        cost = Cost()
        with measure(cost):
            judged = judge_items(ctx.engine.sampler(model_dir), cfg.judge, items, samples=1, seed=cfg.seed + 7,
                                 gate=gate if cfg.self_reward.gate.enabled else None, desc=f"gate {name}",
                                 max_input_tokens=cfg.model.max_length)
            cost.add_generation(judged.tokens, ctx.n_params)
        records = judged.records
        for r in records:
            r["prompt"], r["response"] = items[r["item"]]
        write_jsonl(d / "judgments.jsonl", records)
        write_jsonl(d / "failing_judgments.jsonl", [r for r in records if r["score"] is None])
        rec = mark_done(d, {"stage": name, "tripped": gate.tripped, "gate": gate.to_dict(),
                            "parse_rate": judging.parse_rate(judged.scores()),
                            "truncated_rate": judged.truncated_rate(), "input_truncated": judged.input_truncated(),
                            "failing_file": f"{name}/failing_judgments.jsonl", "cost": cost.to_dict()},
                        outputs=["judgments.jsonl", "failing_judgments.jsonl"], inputs=inputs)
    _remember(job, name, rec)
    record_cost(ctx, name, rec.get("cost"))
    g = rec["gate"]
    job.log_once(d, {f"gate/{name}/parse_rate": rec["parse_rate"], f"gate/{name}/longest_streak": g["longest_streak"],
                     f"gate/{name}/judgments": g["total"], f"gate/{name}/tripped": int(rec["tripped"]),
                     f"gate/{name}/truncated_rate": rec["truncated_rate"],
                     **_cost_metrics("probe" if name == "probe" else name, rec["cost"])}, step=0,
                 artifacts=[(d / "judgments.jsonl", f"gate/{name}")])
    return rec


def _model_stage(probe_name: str) -> str:
    """The stage whose model a probe judges: ``probe`` -> sft, ``probe_<r>`` -> remediation_<r>."""
    return "sft" if probe_name == "probe" else "remediation_" + probe_name.split("_", 1)[1]


def stage_seed_dpo(ctx: Ctx, model_dir: Path | None, name: str, epochs: float) -> Path:
    """DPO on the seed preference pairs (small-model study; also the gate's remediation)."""
    job, data = ctx.job, ctx.data
    d = job.dir(name)
    previous = job.records.get(_previous_model_stage(job, model_dir))
    inputs = [_input(job, "data"), previous]
    rec = stage_record(d, inputs)
    if rec is None:
        job.heartbeat(name)
        if not data.seed_pairs:
            raise SrscaleError(f"{name}: the seed data has no preference pairs; use a data source with pairs")
        cost = Cost()
        with measure(cost):
            result = train(ctx, _spec(ctx, "dpo", data.seed_pairs, d, policy_dir=model_dir, ref_dir=model_dir,
                                      prefix=name, epochs=epochs))
        _add_dpo_tokens(ctx, cost, data.seed_pairs, result)
        rec = mark_done(d, {**_dpo_record(result, len(data.seed_pairs)), "cost": cost.to_dict()},
                        outputs=["train_rows.jsonl"], models=["model"], inputs=inputs)
    _remember(job, name, rec)
    record_cost(ctx, name, rec.get("cost"))
    job.log_once(d, {f"{name}/loss": rec["loss"], f"{name}/reward_accuracy": rec["reward_accuracy"],
                     **_cost_metrics("seed_dpo" if name == "seed_dpo" else name, rec["cost"])}, step=0,
                 series={f"{name}/loss_curve": [tuple(p) for p in rec["loss_curve"]]})
    return d / "model"


def _previous_model_stage(job: Job, model_dir: Path | None) -> str:
    """The name of the stage that produced ``model_dir`` (``sft``, ``remediation_1``, ...)."""
    if model_dir is None:
        return "data"
    return Path(rel(job.root, model_dir)).parts[0]


def _add_dpo_tokens(ctx: Ctx, cost: Cost, rows: list[dict], result) -> None:
    tokens, _cut = count_train_tokens(ctx.models.tokenizer(), "dpo", rows, ctx.cfg.model.max_length)
    cost.add_training(_trained_tokens(tokens, len(rows), result), ctx.n_params, reference_forward=True)


def _spec(ctx: Ctx, kind: str, rows: list[dict], d: Path, *, policy_dir: Path | None,
          ref_dir: Path | None = None, prefix: str = "dpo", epochs: float | None = None) -> TrainSpec:
    """The stage's training as data; its rows are kept beside the model (``train_rows.jsonl``)."""
    from srscale.launch import is_sharded

    cfg = ctx.cfg
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "train_rows.jsonl", rows)
    return TrainSpec(kind=kind, model=cfg.model, lora=cfg.lora,
                     settings=cfg.train.sft if kind == "sft" else cfg.train.dpo, base_path=ctx.models.base_path,
                     policy_dir=str(policy_dir) if policy_dir else None, ref_dir=str(ref_dir) if ref_dir else None,
                     rows_file=str(d / "train_rows.jsonl"), output_dir=str(d), max_length=cfg.model.max_length,
                     seed=cfg.seed, epochs=epochs, prefix=prefix, sharded=is_sharded(cfg.train.distributed))


def train(ctx: Ctx, spec: TrainSpec):
    """Run one training stage here, or in ``train.distributed.num_processes`` processes. The engine
    releases the models it holds first, so training has the accelerator's memory."""
    from srscale.launch import run_distributed

    ctx.engine.release()
    ctx.models.drop()
    dist = ctx.cfg.train.distributed
    if dist.num_processes > 1:
        return run_distributed(spec, dist)
    return run_spec(spec, local_placement(ctx.models.device))


def _dpo_record(result, n_pairs: int) -> dict:
    return {"steps": result.steps, "runtime_s": result.runtime_s, "pairs": n_pairs,
            "loss": result.mean("loss"), "loss_last": result.last("loss"),
            "reward_accuracy": result.mean("rewards/accuracies"), "reward_margin": result.mean("rewards/margins"),
            "loss_curve": [(int(r["step"]), r["loss"]) for r in result.history if "loss" in r],
            "precision": result.precision}


# ------------------------------------------------------------------------------------ iterations
ITER_ARTIFACTS = ("prompts/prompts.jsonl", "candidates/candidates.jsonl", "judging/judgments.jsonl",
                  "pairs/pairs.jsonl", "judging/score_histogram.json", "judging/score_histogram.png")


def stage_iteration(ctx: Ctx, policy_dir: Path | None, t: int) -> dict:
    """One self-rewarding iteration: prompts -> candidates -> self-judging -> pairs -> DPO.

    Each sub-stage writes its outputs and its own DONE record under ``iter_<t>/``; the iteration's
    record (its ``iter/*`` metrics, logged at step t) is written when all of them are complete.
    """
    cfg, job = ctx.cfg, ctx.job
    d = job.dir(f"iter_{t}")
    upstream = job.records.get(_previous_model_stage(job, policy_dir))
    inputs = [_input(job, "data"), upstream]
    rec = stage_record(d, inputs)
    if rec is None:
        job.heartbeat(f"iter_{t}")
        seed = cfg.seed * 1000 + t
        prompts = stage_prompts(ctx, d / "prompts", policy_dir, t, seed, inputs)
        cands = stage_candidates(ctx, d / "candidates", policy_dir, t, seed, [prompts])
        judged = stage_self_judging(ctx, d / "judging", policy_dir, t, seed, [cands])
        m = {**prompts["metrics"], **cands["metrics"], **judged["metrics"]}
        costs = [prompts["cost"], cands["cost"], judged["cost"]]
        if judged["tripped"]:
            rec = mark_done(d, {"tripped": True, "gate": judged["gate"], "metrics": m, "cost": Cost.total(costs),
                                "failing_file": f"iter_{t}/judging/failing_judgments.jsonl"}, inputs=inputs)
        else:
            pairs = stage_pairs(ctx, d / "pairs", t, seed, [cands, judged])
            trained = stage_dpo(ctx, d / "dpo", policy_dir, t, [pairs, upstream])
            m.update(pairs["metrics"], **trained["metrics"])
            costs.append(trained["cost"])
            rec = mark_done(d, {"tripped": False, "metrics": m, "cost": Cost.total(costs),
                                "model_dir": trained["model_dir"]}, inputs=inputs)
    _remember(job, f"iter_{t}", rec)
    record_cost(ctx, f"iter_{t}", rec.get("cost"))
    metrics = {**{f"iter/{k}": v for k, v in rec["metrics"].items()}, **_cost_metrics("iter", rec["cost"])}
    artifacts = [(d / f, f"iterations/iter_{t}") for f in ITER_ARTIFACTS if (d / f).exists()]
    if rec.get("model_dir") and cfg.tracking.log_models and (d / "dpo" / "model").is_dir():
        artifacts.append((d / "dpo" / "model", f"iterations/iter_{t}/model"))
    job.log_once(d, metrics, step=t, artifacts=artifacts)
    return rec


def _instruct_source(ctx: Ctx, policy_dir: Path | None) -> Path | None:
    who = ctx.cfg.self_reward.instruct_model
    if who == "policy":
        return policy_dir
    if who == "m1":
        return ctx.m1
    path = Path(who).expanduser()
    if not path.is_dir():
        raise SrscaleError(f"self_reward.instruct_model={who}: no such model directory; use policy, m1, or a "
                           "directory a model or adapter was saved to")
    return path


def stage_prompts(ctx: Ctx, d: Path, policy_dir: Path | None, t: int, seed: int, inputs: list) -> dict:
    cfg = ctx.cfg
    rec = stage_record(d, inputs)
    if rec is None:
        d.mkdir(parents=True, exist_ok=True)
        cost = Cost()
        with measure(cost):
            prompts, counts, tokens = make_prompts(ctx, _instruct_source(ctx, policy_dir), seed, t)
            cost.add_generation(tokens, ctx.n_params)
        write_jsonl(d / "prompts.jsonl", prompts)
        metrics = {**{f"prompts_{k}": v for k, v in counts.items()}, "prompts_kept": len(prompts)}
        rec = mark_done(d, {"metrics": metrics, "cost": cost.to_dict(),
                            "instruct_model": cfg.self_reward.instruct_model}, outputs=["prompts.jsonl"],
                        inputs=inputs)
    return rec


def stage_candidates(ctx: Ctx, d: Path, policy_dir: Path | None, t: int, seed: int, inputs: list) -> dict:
    cfg, sr = ctx.cfg, ctx.cfg.self_reward
    rec = stage_record(d, inputs)
    if rec is None:
        d.mkdir(parents=True, exist_ok=True)
        prompts = read_jsonl(d.parent / "prompts" / "prompts.jsonl")
        cost = Cost()
        with measure(cost):
            sampler = ctx.engine.sampler(policy_dir)
            texts = [render_chat(sampler.tokenizer, user_turn(p["prompt"])) for p in prompts]
            results = sampler.generate(texts, SamplingParams(sr.max_new_tokens, sr.temperature, sr.top_p,
                                                             n=sr.candidates),
                                       seed=seed + 11, desc=f"iter {t} candidates",
                                       max_input_tokens=cfg.model.max_length)
            tokens = TokenCount().add(results)
            cost.add_generation(tokens, ctx.n_params)
        rows = [{"prompt_id": i, "candidate": j, "prompt": p["prompt"], "text": c.text, "truncated": c.truncated}
                for i, (p, cs) in enumerate(zip(prompts, results, strict=True)) for j, c in enumerate(cs or [])]
        write_jsonl(d / "candidates.jsonl", rows)
        lengths = [len(r["text"]) for r in rows]
        metrics = {"candidates": len(rows),
                   "candidate_len_mean": sum(lengths) / len(lengths) if lengths else None,
                   "candidates_empty_rate": _rate(sum(n == 0 for n in lengths), len(lengths)),
                   "candidates_truncated_rate": _rate(tokens.truncated_outputs, tokens.sequences)}
        rec = mark_done(d, {"metrics": metrics, "cost": cost.to_dict()}, outputs=["candidates.jsonl"], inputs=inputs)
    return rec


def stage_self_judging(ctx: Ctx, d: Path, policy_dir: Path | None, t: int, seed: int, inputs: list) -> dict:
    """The policy judges its own candidates K times each, in candidate order, with the gate on."""
    cfg, sr = ctx.cfg, ctx.cfg.self_reward
    rec = stage_record(d, inputs)
    if rec is None:
        d.mkdir(parents=True, exist_ok=True)
        candidates = read_jsonl(d.parent / "candidates" / "candidates.jsonl")
        gate = judging.ConsecutiveFailureGate(sr.gate.max_consecutive)
        cost = Cost()
        with measure(cost):
            judged = judge_items(ctx.engine.sampler(policy_dir), cfg.judge,
                                 [(c["prompt"], c["text"]) for c in candidates], samples=cfg.judge.samples,
                                 seed=seed + 23, gate=gate if sr.gate.enabled else None, desc=f"iter {t} judging",
                                 max_input_tokens=cfg.model.max_length)
            cost.add_generation(judged.tokens, ctx.n_params)
        records = judged.records
        for r in records:
            r["prompt_id"], r["candidate"] = candidates[r["item"]]["prompt_id"], candidates[r["item"]]["candidate"]
        write_jsonl(d / "judgments.jsonl", records)
        write_jsonl(d / "failing_judgments.jsonl", [r for r in records if r["score"] is None])
        scores = judged.scores()
        valid = [s for s in scores if s is not None]
        mean = sum(valid) / len(valid) if valid else None
        hist = pairs_mod.score_histogram(scores)
        write_json(d / "score_histogram.json", hist)
        from srscale.analysis import histogram_png

        histogram_png(hist, d / "score_histogram.png", title=f"iteration {t}: self-assigned scores")
        metrics = {"judge_samples": len(records),
                   "parse_failure_rate": _rate(sum(s is None for s in scores), len(scores)),
                   "longest_failure_streak": gate.longest_streak if sr.gate.enabled else _longest_streak(scores),
                   "judge_truncated_rate": judged.truncated_rate(),
                   "judge_input_truncated": judged.input_truncated(),
                   "score_mean": mean,
                   "score_std": (sum((s - mean) ** 2 for s in valid) / len(valid)) ** 0.5 if valid else None}
        rec = mark_done(d, {"metrics": metrics, "tripped": gate.tripped, "gate": gate.to_dict(),
                            "cost": cost.to_dict()},
                        outputs=["judgments.jsonl", "failing_judgments.jsonl"], inputs=inputs)
    return rec


def _longest_streak(scores: list[float | None]) -> int:
    g = judging.ConsecutiveFailureGate(max_consecutive=len(scores) + 1)
    g.update_scores(scores)
    return g.longest_streak


def stage_pairs(ctx: Ctx, d: Path, t: int, seed: int, inputs: list) -> dict:
    """Preference pairs from the judged candidates (max vs min mean score, ties dropped)."""
    sr, data = ctx.cfg.self_reward, ctx.data
    rec = stage_record(d, inputs)
    if rec is None:
        d.mkdir(parents=True, exist_ok=True)
        candidates = read_jsonl(d.parent / "candidates" / "candidates.jsonl")
        judgments = read_jsonl(d.parent / "judging" / "judgments.jsonl")
        per_item = scores_by_item(judgments, len(candidates))
        grouped: dict[int, list[dict]] = {}
        prompts: dict[int, str] = {}
        for c, s in zip(candidates, per_item, strict=True):
            grouped.setdefault(c["prompt_id"], []).append({"text": c["text"], "scores": s})
            prompts[c["prompt_id"]] = c["prompt"]
        items = [{"prompt": prompts[pid], "prompt_id": str(pid), "candidates": cands}
                 for pid, cands in sorted(grouped.items())]
        pair_list, stats = pairs_mod.build_pairs(items, strategy=sr.pair_strategy, rng=seed + 31)
        if sr.max_pairs is not None:  # keep the most decisive pairs (largest score margin)
            pair_list = sorted(pair_list, key=lambda p: -p.margin)[: sr.max_pairs]
        pair_rows = [p.to_dict() for p in pair_list]
        m: dict[str, Any] = {}
        if data.verifiable:
            pair_rows = [{**p, **_checker_grades(p)} for p in pair_rows]
            m["judge_checker_agreement"] = checker_agreement(pair_rows)
        write_jsonl(d / "pairs.jsonl", pair_rows)
        chosen_len, rejected_len, margin = pairs_mod.pair_means(pair_list)  # of the pairs DPO trains on
        m.update(valid_pairs=len(pair_rows), ties_dropped=stats.ties, too_few_valid=stats.too_few_valid,
                 duplicate_candidates=stats.duplicates_merged, chosen_len_mean=chosen_len,
                 rejected_len_mean=rejected_len, score_margin_mean=margin)
        rec = mark_done(d, {"metrics": m}, outputs=["pairs.jsonl"], inputs=inputs)
    return rec


def stage_dpo(ctx: Ctx, d: Path, policy_dir: Path | None, t: int, inputs: list) -> dict:
    """DPO on the iteration's pairs -> M(t+1). The reference is the policy it starts from
    (``train.dpo.reference=previous``) or M1, the SFT model (``m1``)."""
    cfg, job = ctx.cfg, ctx.job
    rec = stage_record(d, inputs)
    if rec is None:
        d.mkdir(parents=True, exist_ok=True)
        pair_rows = read_jsonl(d.parent / "pairs" / "pairs.jsonl")
        rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pair_rows]
        if cfg.train.dpo.include_seed_pairs:
            rows += ctx.data.seed_pairs
        if not rows:
            log.warning("iteration %d: no valid pairs; the model is carried over unchanged", t)
            rec = mark_done(d, {"metrics": {}, "cost": Cost().to_dict(), "model_dir": rel(job.root, policy_dir)},
                            inputs=inputs)
        else:
            ref_dir = policy_dir if cfg.train.dpo.reference == "previous" else ctx.m1
            cost = Cost()
            with measure(cost):
                result = train(ctx, _spec(ctx, "dpo", rows, d, policy_dir=policy_dir, ref_dir=ref_dir,
                                          prefix=f"dpo/iter_{t}"))
            _add_dpo_tokens(ctx, cost, rows, result)
            r = _dpo_record(result, len(rows))
            metrics = {"dpo_loss": r["loss"], "dpo_loss_last": r["loss_last"], "dpo_reward_accuracy": r["reward_accuracy"],
                       "dpo_reward_margin": r["reward_margin"], "dpo_steps": r["steps"]}
            rec = mark_done(d, {"metrics": metrics, "cost": cost.to_dict(), "model_dir": rel(job.root, d / "model"),
                                "reference": rel(job.root, ref_dir) if ref_dir else "base", "record": r},
                            outputs=["train_rows.jsonl"], models=["model"], inputs=inputs)
    return rec


def _rate(n: int, total: int) -> float | None:
    return n / total if total else None


def _checker_grades(pair: dict) -> dict:
    from srscale.suite.families import grade

    return {"chosen_grade": grade(pair["prompt"], pair["chosen"]),
            "rejected_grade": grade(pair["prompt"], pair["rejected"])}


def checker_agreement(pair_rows: list[dict]) -> float | None:
    """Among pairs the checker can order (both graded, grades differ): share the self-judge ordered alike."""
    decided = [p for p in pair_rows if p.get("chosen_grade") is not None and p.get("rejected_grade") is not None
               and p["chosen_grade"] != p["rejected_grade"]]
    if not decided:
        return None
    return sum(p["chosen_grade"] > p["rejected_grade"] for p in decided) / len(decided)


def _earlier_prompts(root: Path, t: int) -> list[str]:
    return [r["prompt"] for i in range(1, t) if (root / f"iter_{i}" / "prompts" / "prompts.jsonl").exists()
            for r in read_jsonl(root / f"iter_{i}" / "prompts" / "prompts.jsonl")]


def make_prompts(ctx: Ctx, source: Path | None, seed: int, t: int) -> tuple[list[dict], dict[str, int], TokenCount]:
    """New prompts for iteration t: self-instruct (few-shot, ROUGE-L filtered) or seed-pool samples."""
    cfg, sr, root = ctx.cfg, ctx.cfg.self_reward, ctx.job.root
    rng = random.Random(seed)
    pool = [p["prompt"] for p in ctx.data.seed_prompts]
    if not pool:
        raise SrscaleError("the seed prompt pool is empty: set data.sizes.seed_prompts > 0")
    tokens = TokenCount()
    previous = _earlier_prompts(root, t)
    if sr.prompt_source == "seed_pool":
        # Without replacement across iterations while the pool lasts.
        used = set(previous)
        fresh = [p for p in pool if p not in used] or pool
        chosen = rng.sample(fresh, min(sr.prompts_per_iteration, len(fresh)))
        return [{"prompt": p, "source": "seed_pool"} for p in chosen], {"generated": len(chosen)}, tokens
    # earlier iterations' prompts are also "previously generated" shots and part of the ROUGE pool
    filt = selfinstruct.PromptFilter(pool + previous, threshold=sr.rouge_threshold,
                                     min_chars=sr.min_prompt_chars, max_chars=sr.max_prompt_chars)
    sampler = ctx.engine.sampler(source)
    kept: list[str] = []
    generated = attempts = 0
    while len(kept) < sr.prompts_per_iteration and attempts < 4:
        attempts += 1
        texts = []
        for _ in range(sr.prompts_per_iteration * 2):
            seeds, gens = selfinstruct.sample_shots(pool, previous + kept, sr.shots_seed, sr.shots_generated, rng)
            texts.append(selfinstruct.build_fewshot_prompt(seeds, gens))
        results = sampler.generate(texts, SamplingParams(sr.instruct_max_new_tokens, sr.instruct_temperature,
                                                         sr.instruct_top_p),
                                   seed=seed + attempts, desc=f"iter {t} self-instruct",
                                   max_input_tokens=cfg.model.max_length)
        tokens.add(results)
        for entry in results:
            generated += 1
            instruction = selfinstruct.extract_instruction(entry[0].text if entry else None)
            ok, _reason = filt.consider(instruction)
            if ok:
                kept.append(instruction)
                if len(kept) >= sr.prompts_per_iteration:
                    break
    counts = {"generated": generated, **{f"filtered_{k}": v for k, v in filt.counts.items() if k != "kept"}}
    return [{"prompt": p, "source": "self_instruct"} for p in kept], counts, tokens

