"""The one orchestrator: stage order, where each stage's outputs live, resume, and all tracking.

Job directory layout (``cfg.output_dir``)::

    data/                  seed data splits (jsonl) + DONE.json
    sft/model/             M1: the SFT adapter (or full weights) + tokenizer
    probe/                 gate probe judgments + DONE.json (gate counters)
    seed_dpo/model/        optional DPO on the seed pairs (small-model study; gate remediation)
    iter_<t>/              prompts, candidates, judgments, pairs (jsonl), score histogram, dpo/model
    eval/<stage>/          evaluation outputs per stage
    tracking.json          the MLflow run id (a re-run resumes that run)
    summary.json           written last; its presence means the job is complete

Each stage ends by writing ``DONE.json`` (its metrics) atomically; a re-run skips stages that have
one, and logs a stage's metrics to the tracker once (``LOGGED`` marker), so a killed job resumes
where it stopped without duplicate metrics. Sampling is seeded per stage from ``cfg.seed``.
"""

from __future__ import annotations

import json
import logging
import platform
import random
import subprocess
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from srscale import jobstate, judging, selfinstruct
from srscale import pairs as pairs_mod
from srscale.config import Config, flatten
from srscale.errors import SrscaleError
from srscale.generation import SamplingParams, generate_texts, render_chat, user_turn
from srscale.seed_data import SeedData, read_jsonl, write_json, write_jsonl
from srscale.tracking import Tracker, make_tracker
from srscale.train_stage import TrainSpec, run_spec

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ stage bookkeeping
def stage_record(directory: Path) -> dict | None:
    path = directory / "DONE.json"
    return json.loads(path.read_text()) if path.exists() else None


def mark_done(directory: Path, record: dict) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "DONE.json", record)
    return record


class Job:
    """Paths and tracker of one job, with log-once semantics for stage metrics."""

    def __init__(self, cfg: Config, root: Path, tracker: Tracker):
        self.cfg, self.root, self.tracker = cfg, root, tracker

    def dir(self, name: str) -> Path:
        d = self.root / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def log_once(self, directory: Path, metrics: dict[str, float], step: int,
                 series: dict[str, list[tuple[int, float]]] | None = None,
                 artifacts: list[tuple[Path, str]] | None = None) -> None:
        """Log a finished stage's metrics (and curves, artifacts) unless this stage already did."""
        marker = directory / "LOGGED"
        if marker.exists():
            return
        self.tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)
        for key, points in (series or {}).items():
            for s, v in points:
                self.tracker.log_metrics({key: v}, step=s)
        for path, dest in artifacts or []:
            self.tracker.log_artifact(path, dest)
        marker.write_text("1")


# ---------------------------------------------------------------------------------- model handle
@dataclass
class Loaded:
    model: Any
    tokenizer: Any
    source: Path | None  # the stage directory the weights came from (None: the base model)


class Models:
    """Loads stage models on demand; keeps the current one in memory."""

    def __init__(self, cfg: Config, base_path: str, device: str):
        self.cfg, self.base_path, self.device = cfg, base_path, device
        self.current: Loaded | None = None

    def tokenizer(self):
        from srscale.models import load_tokenizer

        return load_tokenizer(self.cfg.model, self.base_path)

    def load(self, source: Path | None) -> Loaded:
        """Weights from ``source`` (a saved stage model dir) or the base model when None, for inference."""
        from srscale.models import load_stage_weights

        if self.current is not None and self.current.source == source:
            return self.current
        self.current = None
        tok = self.tokenizer()
        model = load_stage_weights(self.cfg.model, self.base_path, source, self.device)
        model.eval()
        self.current = Loaded(model, tok, source)
        return self.current

    def drop(self) -> None:
        self.current = None


# ----------------------------------------------------------------------------------------- judging
def judge_items(model, tokenizer, cfg: Config, items: list[tuple[str, str]], *, samples: int, seed: int,
                gate: judging.ConsecutiveFailureGate | None, desc: str,
                temperature: float | None = None, batch_size: int | None = None) -> list[dict]:
    """Judge (prompt, response) items ``samples`` times each; return one record per judgment.

    Only generated tokens are parsed. The gate sees judgments in the order they are produced and
    stops generation when it trips (after the batch in flight); the result holds exactly the
    judgments the gate saw, in the order it saw them.
    """
    jc = cfg.judge
    texts, keys = [], []
    for i, (prompt, response) in enumerate(items):
        filled = judging.build_judge_prompt(jc.template, prompt, response)
        for k in range(samples):
            texts.append(render_chat(tokenizer, user_turn(filled)))
            keys.append((i, k))

    seen: list[int] = []  # text indices in the order the gate saw them

    def on_batch(indices: list[int], outputs: list[str]) -> bool:
        if gate is None:
            return False
        for idx, out in zip(indices, outputs, strict=True):
            seen.append(idx)
            if gate.update(judging.parse_score(out) is not None):
                return True  # the rest of this batch was generated but is never judged
        return False

    temp = jc.temperature if temperature is None else temperature
    outs = generate_texts(model, tokenizer, texts, SamplingParams(jc.max_new_tokens, temp, jc.top_p),
                          batch_size=batch_size or cfg.self_reward.batch_size, seed=seed, desc=desc,
                          on_batch=on_batch, max_input_tokens=cfg.model.max_length)
    order = seen if gate is not None else range(len(texts))
    records = []
    for n in order:
        (i, k), text = keys[n], outs[n]
        if text is not None:
            records.append({"item": i, "sample": k, "text": text, "score": judging.parse_score(text)})
    return records


def scores_by_item(records: list[dict], n_items: int, samples: int) -> list[list[float | None]]:
    out: list[list[float | None]] = [[] for _ in range(n_items)]
    for r in records:
        out[r["item"]].append(r["score"])
    return out


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


def run_job(cfg: Config, overrides: str = "") -> dict:
    """Run (or resume) one job. Returns the summary. Raises on errors after recording them."""
    root = Path(cfg.output_dir)
    root.mkdir(parents=True, exist_ok=True)
    summary_path = root / "summary.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        log.info("job already complete in %s (gate: %s); nothing to do", root, summary.get("gate_outcome"))
        return summary

    from srscale.launch import check

    check(cfg.train.distributed)
    tracking_file = root / "tracking.json"
    resume_id = json.loads(tracking_file.read_text())["run_id"] if tracking_file.exists() else None
    run_name = cfg.run_name or f"{cfg.model.name}|{overrides or 'defaults'}"
    tracker = make_tracker(cfg.tracking, run_name=run_name, resume_id=resume_id)
    if tracker.run_id and not resume_id:
        write_json(tracking_file, {"run_id": tracker.run_id})
    job = Job(cfg, root, tracker)
    jobstate.write_state(root, "running", overrides=overrides or "(defaults)", run_id=tracker.run_id,
                         tracking_uri=getattr(tracker, "tracking_uri", None))
    try:
        summary = _run(job, overrides)
    except BaseException as exc:
        jobstate.write_state(root, "failed", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        tb = traceback.format_exc()
        (root / "traceback.txt").write_text(tb)
        tracker.log_text(tb, "traceback.txt")
        tracker.set_tags({"status_reason": f"{type(exc).__name__}: {exc}"[:500]})
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    write_json(summary_path, summary)
    jobstate.write_state(root, "done" if summary.get("gate_outcome") == "passed" else "disqualified",
                         iterations_completed=summary.get("iterations_completed"),
                         gate_stage=summary.get("gate_stage"))
    tracker.log_artifact(summary_path)
    tracker.end("FINISHED")
    return summary


def _run(job: Job, overrides: str) -> dict:
    from srscale.models import count_parameters, model_path, resolve_device

    cfg, tracker = job.cfg, job.tracker
    tracker.log_params(flatten(cfg))
    resolved = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    tracker.log_text(resolved, "config/resolved.yaml")

    data = stage_data(job)
    device = resolve_device(cfg.device)
    base_path = model_path(cfg.model, cfg.cache_dir, cfg.judge.template)
    models = Models(cfg, base_path, device)

    if cfg.data.source == "oasst" and not data.eft and cfg.train.sft.enabled:
        data = stage_oasst_eft(job, models, data)
    m1 = stage_sft(job, models, data)
    current = models.load(m1)
    n_params = count_parameters(current.model)
    tracker.set_tags(environment_tags(cfg.model.hub_id or cfg.model.name, n_params, overrides))

    summary: dict[str, Any] = {"model": cfg.model.name, "params": n_params, "iterations_completed": 0}
    from srscale.evaluation.runner import evaluate_stage

    # Gate probe, with optional remediation (extra DPO on the seed pairs, then a new probe).
    model_dir = m1
    gate_cfg = cfg.self_reward.gate
    probe = stage_probe(job, models, data, model_dir, "probe")
    round_ = 0
    while probe["tripped"] and round_ < gate_cfg.remediation_rounds:
        round_ += 1
        model_dir = stage_seed_dpo(job, models, data, model_dir, f"remediation_{round_}",
                                   gate_cfg.remediation_epochs)
        probe = stage_probe(job, models, data, model_dir, f"probe_{round_}")
    if probe["tripped"]:
        return disqualify(job, summary, probe, stage=probe["stage"])
    tracker.set_tags({"gate_probe": "passed"})

    if cfg.train.seed_dpo_epochs > 0 and data.seed_pairs:
        if "sft" in cfg.eval.stages:
            evaluate_stage(job, models, data, model_dir, "sft", step=0)
        model_dir = stage_seed_dpo(job, models, data, model_dir, "seed_dpo", cfg.train.seed_dpo_epochs)
        if "seed_dpo" in cfg.eval.stages:
            evaluate_stage(job, models, data, model_dir, "seed_dpo", step=0)
    elif "sft" in cfg.eval.stages:
        evaluate_stage(job, models, data, model_dir, "sft", step=0)

    reference_m1 = model_dir
    for t in range(1, cfg.self_reward.iterations + 1):
        result = stage_iteration(job, models, data, model_dir, reference_m1, t)
        if result.get("tripped"):
            return disqualify(job, summary, result, stage=f"iter_{t}")
        if result.get("model_dir"):
            model_dir = Path(result["model_dir"])
        summary["iterations_completed"] = t
        if "iterations" in cfg.eval.stages:
            evaluate_stage(job, models, data, model_dir, f"iter_{t}", step=t)
    if "final" in cfg.eval.stages and "iterations" not in cfg.eval.stages:
        evaluate_stage(job, models, data, model_dir, "final", step=cfg.self_reward.iterations)
    tracker.set_tags({"gate_outcome": "passed"})
    summary.update(gate_outcome="passed", final_model=str(model_dir))
    return summary


def disqualify(job: Job, summary: dict, record: dict, stage: str) -> dict:
    """The gate tripped: tag the run, keep the failing outputs, end the job normally."""
    gate = record["gate"]
    job.tracker.set_tags({"gate_outcome": "disqualified", "gate_stage": stage,
                          "gate_longest_streak": gate["longest_streak"], "gate_judgments": gate["total"],
                          "gate_failures": gate["failures"], "gate_tripped_at": gate["tripped_at"]})
    failing = job.root / record["failing_file"]
    job.tracker.log_artifact(failing, "gate")
    log.warning("gate: model disqualified at %s after %s consecutive unparseable judgments (%s judged)",
                stage, gate["longest_streak"], gate["total"])
    summary.update(gate_outcome="disqualified", gate_stage=stage, gate=gate)
    return summary


# ---------------------------------------------------------------------------------------- stages
def stage_data(job: Job) -> SeedData:
    cfg, d = job.cfg, job.dir("data")
    if stage_record(d) is None:
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
        mark_done(d, {"counts": data.counts()})
    data = SeedData.load(d)
    job.log_once(d, {f"data/{k}": v for k, v in data.counts().items()}, step=0,
                 artifacts=[(d / "sample", "seed_data_sample")])
    return data


def _bf16(cfg: Config) -> bool:
    return cfg.model.dtype == "bfloat16"


def stage_sft(job: Job, models: Models, data: SeedData) -> Path | None:
    """SFT on IFT+EFT -> M1. With ``train.sft.enabled=false`` M1 is the base model (returns None)."""
    cfg = job.cfg
    if not cfg.train.sft.enabled:
        return None
    d = job.dir("sft")
    rec = stage_record(d)
    if rec is None:
        rows = data.ift + [{"prompt": r["prompt"], "response": r["response"]} for r in data.eft]
        random.Random(cfg.seed).shuffle(rows)
        result = train(job, models, _spec(cfg, models, "sft", rows, d, policy_dir=None))
        losses = [(int(r["step"]), r["loss"]) for r in result.history if "loss" in r]
        rec = mark_done(d, {"steps": result.steps, "runtime_s": result.runtime_s, "examples": len(rows),
                            "loss_first": losses[0][1] if losses else None,
                            "loss_last": losses[-1][1] if losses else None, "loss_curve": losses})
    metrics = {"sft/steps": rec["steps"], "sft/runtime_s": rec["runtime_s"], "sft/examples": rec["examples"]}
    artifacts = [(d / "model", "sft_model")] if job.cfg.tracking.log_models else []
    job.log_once(d, metrics, step=0, series={"sft/loss": [tuple(p) for p in rec["loss_curve"]]},
                 artifacts=artifacts)
    return d / "model"


def stage_oasst_eft(job: Job, models: Models, data: SeedData) -> SeedData:
    """The paper's EFT for OASST: an IFT-only SFT model judges human-ranked replies; judgments whose
    scores order the replies as the human ranks do are kept (balanced by score) as EFT for M1."""
    from srscale.data_sources import build_oasst_eft, oasst_ranked_items

    cfg = job.cfg
    d = job.dir("oasst_eft")
    rec = stage_record(d)
    if rec is None:
        base = job.dir("oasst_eft/sft_ift")
        if not (base / "model").exists():
            train(job, models, _spec(cfg, models, "sft", data.ift, base, policy_dir=None))
        items = oasst_ranked_items(cfg.data)
        flat = [(it["prompt"], reply) for it in items for reply in it["replies"]]
        loaded = models.load(base / "model")
        records = judge_items(loaded.model, loaded.tokenizer, cfg, flat, samples=1, seed=cfg.seed + 3, gate=None,
                              desc="oasst EFT judging")
        by_item = {r["item"]: r for r in records}
        judgments, k = [], 0
        for it in items:
            judgments.append([{"text": by_item[k + j]["text"], "score": by_item[k + j]["score"]}
                              for j in range(len(it["replies"]))])
            k += len(it["replies"])
        rows = build_oasst_eft(items, judgments, cfg.judge.template, cfg.seed)
        write_jsonl(d / "judgments.jsonl", records)
        write_jsonl(d / "eft.jsonl", rows)
        rec = mark_done(d, {"prompts": len(items), "judged": len(records),
                            "parse_rate": judging.parse_rate([r["score"] for r in records]), "eft_rows": len(rows)})
    data.eft = read_jsonl(d / "eft.jsonl")
    job.log_once(d, {f"oasst_eft/{k}": v for k, v in rec.items()}, step=0,
                 artifacts=[(d / "eft.jsonl", "oasst_eft")])
    return data


def stage_probe(job: Job, models: Models, data: SeedData, model_dir: Path | None, name: str) -> dict:
    """Judge the probe set once per item with the gate on; stop the moment it trips."""
    cfg = job.cfg
    d = job.dir(name)
    rec = stage_record(d)
    if rec is None:
        loaded = models.load(model_dir)
        gate = judging.ConsecutiveFailureGate(cfg.self_reward.gate.max_consecutive)
        items = [(p["prompt"], p["response"]) for p in data.probe]
        if not items:
            raise SrscaleError("the gate probe set is empty: set data.sizes.probe > 0 (or gate.enabled=false)")
        # Batches no larger than the trip point, so a model that cannot judge costs one batch.
        records = judge_items(loaded.model, loaded.tokenizer, cfg, items, samples=1, seed=cfg.seed + 7,
                              gate=gate if cfg.self_reward.gate.enabled else None, desc=f"gate {name}",
                              batch_size=min(cfg.self_reward.batch_size, cfg.self_reward.gate.max_consecutive + 1))
        for r in records:
            r["prompt"], r["response"] = items[r["item"]]
        write_jsonl(d / "judgments.jsonl", records)
        failing = [r for r in records if r["score"] is None]
        write_jsonl(d / "failing_judgments.jsonl", failing)
        rec = mark_done(d, {"stage": name, "tripped": gate.tripped, "gate": gate.to_dict(),
                            "parse_rate": judging.parse_rate([r["score"] for r in records]),
                            "failing_file": f"{name}/failing_judgments.jsonl"})
    g = rec["gate"]
    job.log_once(d, {f"gate/{name}/parse_rate": rec["parse_rate"], f"gate/{name}/longest_streak": g["longest_streak"],
                     f"gate/{name}/judgments": g["total"], f"gate/{name}/tripped": int(rec["tripped"])}, step=0,
                 artifacts=[(d / "judgments.jsonl", f"gate/{name}")])
    return rec


def stage_seed_dpo(job: Job, models: Models, data: SeedData, model_dir: Path | None, name: str,
                   epochs: float) -> Path:
    """DPO on the seed preference pairs (small-model study; also the gate's remediation)."""
    d = job.dir(name)
    rec = stage_record(d)
    if rec is None:
        if not data.seed_pairs:
            raise SrscaleError(f"{name}: the seed data has no preference pairs; use a data source with pairs")
        result = _dpo(job, models, model_dir, model_dir, data.seed_pairs, d, prefix=name, epochs=epochs)
        rec = mark_done(d, _dpo_record(result, len(data.seed_pairs)))
    job.log_once(d, {f"{name}/loss": rec["loss"], f"{name}/reward_accuracy": rec["reward_accuracy"]}, step=0,
                 series={f"{name}/loss_curve": [tuple(p) for p in rec["loss_curve"]]})
    return d / "model"


def _dpo(job: Job, models: Models, policy_dir: Path | None, ref_dir: Path | None, rows: list[dict], d: Path,
         prefix: str, epochs: float | None = None):
    spec = _spec(job.cfg, models, "dpo", rows, d, policy_dir=policy_dir, ref_dir=ref_dir, prefix=prefix,
                 epochs=epochs)
    return train(job, models, spec)


def _spec(cfg: Config, models: Models, kind: str, rows: list[dict], d: Path, *, policy_dir: Path | None,
          ref_dir: Path | None = None, prefix: str = "dpo", epochs: float | None = None) -> TrainSpec:
    """The stage's training as data; its rows are kept beside the model (``train_rows.jsonl``)."""
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "train_rows.jsonl", rows)
    return TrainSpec(kind=kind, model=cfg.model, lora=cfg.lora,
                     settings=cfg.train.sft if kind == "sft" else cfg.train.dpo, base_path=models.base_path,
                     policy_dir=str(policy_dir) if policy_dir else None, ref_dir=str(ref_dir) if ref_dir else None,
                     rows_file=str(d / "train_rows.jsonl"), output_dir=str(d), max_length=cfg.model.max_length,
                     seed=cfg.seed, bf16=_bf16(cfg), epochs=epochs, prefix=prefix)


def train(job: Job, models: Models, spec: TrainSpec):
    """Run one training stage here, or in ``train.distributed.num_processes`` processes."""
    from srscale.launch import run_distributed

    models.drop()  # the stage loads its own weights; free the ones held for generation
    dist = job.cfg.train.distributed
    if dist.num_processes > 1:
        return run_distributed(spec, dist)
    return run_spec(spec, models.device)


def _dpo_record(result, n_pairs: int) -> dict:
    return {"steps": result.steps, "runtime_s": result.runtime_s, "pairs": n_pairs,
            "loss": result.mean("loss"), "loss_last": result.last("loss"),
            "reward_accuracy": result.mean("rewards/accuracies"), "reward_margin": result.mean("rewards/margins"),
            "loss_curve": [(int(r["step"]), r["loss"]) for r in result.history if "loss" in r]}


def _jsonl_cached(path: Path, make) -> list[dict]:
    if path.exists():
        return read_jsonl(path)
    rows = make()
    write_jsonl(path, rows)
    return rows


def stage_iteration(job: Job, models: Models, data: SeedData, model_dir: Path | None, m1_dir: Path | None,
                    t: int) -> dict:
    """One self-rewarding iteration: prompts -> candidates -> self-judging -> pairs -> DPO."""
    cfg = job.cfg
    d = job.dir(f"iter_{t}")
    rec = stage_record(d)
    if rec is None:
        rec = _iteration(job, models, data, model_dir, m1_dir, t, d)
        mark_done(d, rec)
    metrics = {f"iter/{k}": v for k, v in rec["metrics"].items()}
    artifacts = [(d / f, f"iterations/iter_{t}") for f in
                 ("prompts.jsonl", "candidates.jsonl", "judgments.jsonl", "pairs.jsonl", "score_histogram.json",
                  "score_histogram.png")]
    if rec.get("model_dir") and cfg.tracking.log_models:
        artifacts.append((Path(rec["model_dir"]), f"iterations/iter_{t}/model"))
    job.log_once(d, metrics, step=t, artifacts=artifacts)
    return rec


def _iteration(job: Job, models: Models, data: SeedData, model_dir: Path | None, m1_dir: Path | None, t: int,
               d: Path) -> dict:
    cfg, sr = job.cfg, job.cfg.self_reward
    seed = cfg.seed * 1000 + t
    loaded = models.load(model_dir)
    model, tok = loaded.model, loaded.tokenizer
    m: dict[str, float | None] = {}

    # 1. prompts
    prompts = _jsonl_cached(d / "prompts.jsonl", lambda: make_prompts(cfg, model, tok, data, seed, job.root, t))
    counts = json.loads((d / "prompt_counts.json").read_text()) if (d / "prompt_counts.json").exists() else {}
    m.update({f"prompts_{k}": v for k, v in counts.items()})
    m["prompts_kept"] = len(prompts)

    # 2. candidates: all prompts x N in batches
    def make_candidates() -> list[dict]:
        texts = [render_chat(tok, user_turn(p["prompt"])) for p in prompts for _ in range(sr.candidates)]
        outs = generate_texts(model, tok, texts, SamplingParams(sr.max_new_tokens, sr.temperature, sr.top_p),
                              batch_size=sr.batch_size, seed=seed + 11, desc=f"iter {t} candidates",
                              max_input_tokens=cfg.model.max_length)
        return [{"prompt_id": i // sr.candidates, "candidate": i % sr.candidates,
                 "prompt": prompts[i // sr.candidates]["prompt"], "text": o} for i, o in enumerate(outs)]

    candidates = _jsonl_cached(d / "candidates.jsonl", make_candidates)
    m["candidates"] = len(candidates)

    # 3. self-judging with the gate on
    gate = judging.ConsecutiveFailureGate(sr.gate.max_consecutive)
    jpath = d / "judgments.jsonl"
    if jpath.exists():
        judgments = read_jsonl(jpath)
        gate_state = json.loads((d / "gate.json").read_text())
    else:
        items = [(c["prompt"], c["text"]) for c in candidates]
        judgments = judge_items(model, tok, cfg, items, samples=cfg.judge.samples, seed=seed + 23,
                                gate=gate if sr.gate.enabled else None, desc=f"iter {t} judging")
        for r in judgments:
            r["prompt_id"], r["candidate"] = candidates[r["item"]]["prompt_id"], candidates[r["item"]]["candidate"]
        write_jsonl(jpath, judgments)
        gate_state = {"tripped": gate.tripped, **gate.to_dict()}
        write_json(d / "gate.json", gate_state)
    scores = [r["score"] for r in judgments]
    m.update(judge_samples=len(judgments), parse_failure_rate=_rate(sum(s is None for s in scores), len(scores)),
             longest_failure_streak=gate_state["longest_streak"])
    valid = [s for s in scores if s is not None]
    m["score_mean"] = sum(valid) / len(valid) if valid else None
    m["score_std"] = (sum((s - m["score_mean"]) ** 2 for s in valid) / len(valid)) ** 0.5 if valid else None
    hist = pairs_mod.score_histogram(scores)
    write_json(d / "score_histogram.json", hist)
    from srscale.analysis import histogram_png

    histogram_png(hist, d / "score_histogram.png", title=f"iteration {t}: self-assigned scores")
    if gate_state["tripped"]:
        write_jsonl(d / "failing_judgments.jsonl", [r for r in judgments if r["score"] is None])
        return {"tripped": True, "gate": gate_state, "metrics": m, "failing_file": f"iter_{t}/failing_judgments.jsonl"}

    # 4. pairs
    per_item = scores_by_item(judgments, len(candidates), cfg.judge.samples)
    grouped: dict[int, list[dict]] = {}
    for c, s in zip(candidates, per_item, strict=True):
        grouped.setdefault(c["prompt_id"], []).append({"text": c["text"], "scores": s})
    items = [{"prompt": prompts[pid]["prompt"], "prompt_id": str(pid), "candidates": cands}
             for pid, cands in sorted(grouped.items())]
    pair_list, stats = pairs_mod.build_pairs(items, strategy=sr.pair_strategy, rng=seed + 31)
    if sr.max_pairs is not None:  # keep the most decisive pairs (largest score margin)
        pair_list = sorted(pair_list, key=lambda p: -p.margin)[: sr.max_pairs]
    pair_rows = [p.to_dict() for p in pair_list]
    if data.verifiable:
        pair_rows = [{**p, **_checker_grades(p)} for p in pair_rows]
        m["judge_checker_agreement"] = checker_agreement(pair_rows)
    write_jsonl(d / "pairs.jsonl", pair_rows)
    chosen_len, rejected_len, margin = pairs_mod.pair_means(pair_list)  # of the pairs DPO trains on
    m.update(valid_pairs=len(pair_rows), ties_dropped=stats.ties, too_few_valid=stats.too_few_valid,
             duplicate_candidates=stats.duplicates_merged, chosen_len_mean=chosen_len,
             rejected_len_mean=rejected_len, score_margin_mean=margin)

    # 5. DPO -> M(t+1). Drop this frame's references to the generation model so that its memory is
    # free for training (in several processes the workers need the GPUs this process holds).
    loaded = model = tok = None
    train_rows = [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pair_rows]
    if cfg.train.dpo.include_seed_pairs:
        train_rows += data.seed_pairs
    if not train_rows:
        log.warning("iteration %d: no valid pairs; the model is carried over unchanged", t)
        return {"tripped": False, "metrics": m, "model_dir": str(model_dir) if model_dir else None}
    ref_dir = model_dir if cfg.train.dpo.reference == "previous" else m1_dir
    result = _dpo(job, models, model_dir, ref_dir, train_rows, d / "dpo", prefix=f"dpo/iter_{t}")
    rec = _dpo_record(result, len(train_rows))
    m.update(dpo_loss=rec["loss"], dpo_loss_last=rec["loss_last"], dpo_reward_accuracy=rec["reward_accuracy"],
             dpo_reward_margin=rec["reward_margin"], dpo_steps=rec["steps"])
    return {"tripped": False, "metrics": m, "model_dir": str(d / "dpo" / "model")}


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


def make_prompts(cfg: Config, model, tok, data: SeedData, seed: int, root: Path, t: int) -> list[dict]:
    """New prompts for iteration t: self-instruct (few-shot, ROUGE-L filtered) or seed-pool samples."""
    sr = cfg.self_reward
    rng = random.Random(seed)
    pool = [p["prompt"] for p in data.seed_prompts]
    if not pool:
        raise SrscaleError("the seed prompt pool is empty: set data.sizes.seed_prompts > 0")
    counts: dict[str, int] = {}
    if sr.prompt_source == "seed_pool":
        # Without replacement across iterations while the pool lasts.
        used = {r["prompt"] for i in range(1, t) if (root / f"iter_{i}" / "prompts.jsonl").exists()
                for r in read_jsonl(root / f"iter_{i}" / "prompts.jsonl")}
        fresh = [p for p in pool if p not in used] or pool
        chosen = rng.sample(fresh, min(sr.prompts_per_iteration, len(fresh)))
        counts = {"generated": len(chosen), "kept": len(chosen)}
        write_json(root / f"iter_{t}" / "prompt_counts.json", counts)
        return [{"prompt": p, "source": "seed_pool"} for p in chosen]
    # earlier iterations' prompts are also "previously generated" shots and part of the ROUGE pool
    previous = [r["prompt"] for i in range(1, t) if (root / f"iter_{i}" / "prompts.jsonl").exists()
                for r in read_jsonl(root / f"iter_{i}" / "prompts.jsonl")]
    filt = selfinstruct.PromptFilter(pool + previous, threshold=sr.rouge_threshold,
                                     min_chars=sr.min_prompt_chars, max_chars=sr.max_prompt_chars)
    kept: list[str] = []
    generated = 0
    attempts = 0
    while len(kept) < sr.prompts_per_iteration and attempts < 4:
        attempts += 1
        n = sr.prompts_per_iteration * 2
        texts = []
        for _ in range(n):
            seeds, gens = selfinstruct.sample_shots(pool, previous + kept, sr.shots_seed, sr.shots_generated, rng)
            texts.append(selfinstruct.build_fewshot_prompt(seeds, gens))
        outs = generate_texts(model, tok, texts, SamplingParams(sr.instruct_max_new_tokens, sr.instruct_temperature,
                                                                sr.instruct_top_p),
                              batch_size=sr.batch_size, seed=seed + attempts, desc=f"iter {t} self-instruct")
        for o in outs:
            generated += 1
            ok, _reason = filt.consider(selfinstruct.extract_instruction(o))
            if ok:
                kept.append(selfinstruct.extract_instruction(o))
                if len(kept) >= sr.prompts_per_iteration:
                    break
    counts = {"generated": generated, **{f"filtered_{k}": v for k, v in filt.counts.items() if k != "kept"},
              "kept": len(kept)}
    write_json(root / f"iter_{t}" / "prompt_counts.json", counts)
    return [{"prompt": p, "source": "self_instruct"} for p in kept]
