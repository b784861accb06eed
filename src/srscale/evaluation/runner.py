"""Run the evaluations ``cfg.eval`` selects on one stage's model and log them.

Stages: ``base`` (M0, logged as ``base/<name>``), ``sft`` (M1), ``seed_dpo`` (logged as
``seed_dpo_eval/<name>``), ``iter_<t>`` (the model after iteration t); ``eval/<name>`` with the
iteration as step (0: M1). Each stage's cost is logged as ``cost/<prefix>/*``. Each evaluation is independent: a
failing one (a missing judge key, an unreachable endpoint, absent benchmark files) is logged as one line
and tagged, and the others keep their results. Evaluation decoding is greedy so stages compare without
sampling noise.

MT-Bench and head-to-head need a judge. A local judge is one model for every stage of the job (a judge
that changed with the stage would confound the comparison): M1, the SFT model, by default, or
``eval.mtbench.local_judge_path``; which one is tagged ``eval_judge``.

The caller passes its stage context (``ctx``: ``cfg``, ``job``, ``data``, ``engine``, ``models``, ``m1``,
``n_params``); nothing here imports the orchestrator.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError
from srscale.sampling import CountingSampler, SamplingParams, TokenCount, render_chat, texts_of, user_turn
from srscale.seed_data import SeedData, write_json, write_jsonl
from srscale.self_judging import judge_items, scores_by_item
from srscale.stagebook import Cost, mark_done, measure, rel, stage_record

log = logging.getLogger(__name__)


def reward_model_eval(sampler, cfg, data: SeedData, out: Path, seed: int) -> dict[str, float]:
    """Judge every held-out (prompt, response) once, greedily; compare with the gold scores."""
    from srscale.evaluation.reward_metrics import reward_model_metrics

    rows = data.eft_eval[: cfg.eval.max_items]
    flat = [(r["prompt"], resp) for r in rows for resp in r["responses"]]
    judged = judge_items(sampler, cfg.judge, flat, samples=1, seed=seed, desc="eval judge", temperature=0.0,
                         max_input_tokens=cfg.model.max_length)
    per = scores_by_item(judged.records, len(flat))
    items, k = [], 0
    for r in rows:
        n = len(r["responses"])
        items.append({"gold": r["gold"], "pred": [s[0] if s else None for s in per[k:k + n]]})
        k += n
    write_jsonl(out / "reward_model_judgments.jsonl", judged.records)
    metrics = reward_model_metrics(items)
    out_metrics = {f"rm/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
    if judged.records:
        out_metrics["rm/truncated_rate"] = judged.truncated_rate()
    return out_metrics


def task_accuracy_eval(sampler, cfg, data: SeedData, out: Path, seed: int) -> dict[str, float]:
    """Greedy answers to the held-out prompts, graded by the suite's checkers, overall and per family."""
    from srscale.suite.families import grade

    rows = data.heldout[: cfg.eval.max_items]
    texts = [render_chat(sampler.tokenizer, user_turn(r["prompt"])) for r in rows]
    outs = texts_of(sampler.generate(texts, SamplingParams(cfg.self_reward.max_new_tokens, 0.0, 1.0), seed=seed,
                                     desc="eval answers", max_input_tokens=cfg.model.max_length))
    by_family: dict[str, list[float]] = defaultdict(list)
    answers = []
    for r, o in zip(rows, outs, strict=True):
        g = grade(r["prompt"], o)
        correct = g is not None and g >= 4
        by_family[r.get("family") or "unknown"].append(float(correct))
        answers.append({**r, "answer": o, "grade": g, "correct": correct})
    write_jsonl(out / "heldout_answers.jsonl", answers)
    allv = [v for vs in by_family.values() for v in vs]
    metrics = {"task/accuracy": sum(allv) / len(allv) if allv else None,
               "task/answer_len_chars": sum(len(a["answer"] or "") for a in answers) / max(1, len(answers))}
    for fam, vs in by_family.items():
        metrics[f"task/{fam}/accuracy"] = sum(vs) / len(vs)
    return metrics


# Where each evaluation file sits under eval.data_root (the layout of FastChat, AlpacaEval and the
# benchmark releases; the same as the project's test data folder).
DATA_ROOT_LAYOUT = {
    "mtbench.question_file": "mt_bench/question.jsonl",
    "mtbench.reference_file": "mt_bench/reference_answer/gpt-4.jsonl",
    "mtbench.judge_prompts_file": "mt_bench/judge_prompts.jsonl",
    "head_to_head.alpaca_eval_file": "alpaca_eval/results/gpt4_1106_preview/model_outputs.json",
    "lm_eval.data_dir": ".",
}


def fill_from_data_root(eval_cfg) -> None:
    """Set every unset evaluation path from ``eval_cfg.data_root`` (in place). Pure path logic."""
    if not eval_cfg.data_root:
        return
    root = Path(eval_cfg.data_root).expanduser()
    for dotted, rel_path in DATA_ROOT_LAYOUT.items():
        section, key = dotted.split(".")
        target = getattr(eval_cfg, section)
        if getattr(target, key) is None:
            setattr(target, key, str(root / rel_path) if rel_path != "." else str(root))


def evaluate_stage(ctx, source: Path | None, stage: str, step: int, prefix: str = "eval") -> dict[str, Any]:
    """Run the configured evaluations of ``stage`` on the model saved at ``source`` (None: the base).

    Resumable: a finished stage is not redone; its record names the model it evaluated.
    """
    cfg, job = ctx.cfg, ctx.job
    fill_from_data_root(cfg.eval)
    out = job.dir(f"eval/{stage}")
    model_rec = job.records.get(Path(rel(job.root, source)).parts[0]) if source is not None else None
    inputs = [job.records.get("data"), model_rec]
    rec = stage_record(out, inputs)
    if rec is None:
        job.heartbeat(f"eval {stage}")
        metrics: dict[str, float] = {}
        errors: dict[str, str] = {}
        tokens = TokenCount()
        cost = Cost()
        with measure(cost):
            plan = _plan(ctx, source, out, stage, tokens)
            for name, fn in plan:
                try:
                    metrics.update(fn())
                except SrscaleError as exc:
                    errors[name] = str(exc)
                    log.error("evaluation %s failed at stage %s: %s", name, stage, exc)
                except Exception as exc:  # noqa: BLE001 - a crash inside one evaluation must not lose the others
                    import traceback

                    (out / f"{name}_traceback.txt").write_text(traceback.format_exc())
                    first = (str(exc).strip().splitlines() or [""])[0]
                    errors[name] = f"{type(exc).__name__}: {first} (traceback in eval/{stage}/{name}_traceback.txt)"
                    log.error("evaluation %s crashed at stage %s: %s", name, stage, errors[name])
        cost.add_generation(tokens, ctx.n_params)
        write_json(out / "metrics.json", metrics)
        rec = mark_done(out, {"stage": stage, "step": step, "model": rel(job.root, source) if source else "base",
                              "metrics": metrics, "errors": errors, "cost": cost.to_dict(),
                              "judge": _judge_label(ctx) if _needs_judge(cfg) else None},
                        inputs=inputs)
    job.records[f"eval/{stage}"] = rec
    job.costs[f"eval/{stage}"] = rec["cost"]
    logged = {f"{prefix}/{k}": v for k, v in rec["metrics"].items() if v is not None}
    logged.update({f"cost/{prefix}/{k}": v for k, v in rec["cost"].items() if v is not None})
    job.log_once(out, logged, step=step, artifacts=[(out, f"eval/{stage}")])
    if rec["errors"]:
        job.tracker.set_tags({f"eval_error.{k}.{stage}": v[:400] for k, v in rec["errors"].items()})
    if rec.get("judge"):
        job.tracker.set_tags({"eval_judge": rec["judge"]})
    return rec


def _needs_judge(cfg) -> bool:
    return cfg.eval.mtbench.enabled or cfg.eval.head_to_head.enabled


def _judge_label(ctx) -> str:
    mt = ctx.cfg.eval.mtbench
    if mt.judge != "local":
        return f"{mt.judge}:{mt.judge_model}"
    if mt.local_judge_path:
        return f"local:{mt.local_judge_path}"
    return f"local:m1 ({rel(ctx.job.root, ctx.m1) if ctx.m1 else 'the base model'})"


def _plan(ctx, source: Path | None, out: Path, stage: str, tokens: TokenCount) -> list:
    """The evaluations to run, each a zero-argument callable."""
    cfg, data = ctx.cfg, ctx.data

    def sampler():  # the stage's model (the engine keeps it loaded between evaluations)
        return CountingSampler(ctx.engine.sampler(source), tokens)

    plan = []
    if cfg.eval.reward_model and data.eft_eval:
        plan.append(("reward_model", lambda: reward_model_eval(sampler(), cfg, data, out, cfg.seed)))
    if cfg.eval.task_accuracy and data.verifiable and data.heldout:
        plan.append(("task_accuracy", lambda: task_accuracy_eval(sampler(), cfg, data, out, cfg.seed)))
    if cfg.eval.lm_eval.enabled:
        def lm():
            from srscale.evaluation.lmeval import run_lm_eval

            ctx.engine.release()  # lm-eval runs on the transformers model object itself
            loaded = ctx.models.load(source)
            try:
                return {f"lm_eval/{k}": v for k, v in run_lm_eval(loaded.model, loaded.tokenizer, cfg.eval.lm_eval,
                                                                   out).items()}
            finally:
                if ctx.engine.backend != "hf":  # the HF copy must not share the GPU with the woken engine
                    ctx.models.drop()
        plan.append(("lm_eval", lm))
    if cfg.eval.mtbench.enabled:
        def mt():
            from srscale.evaluation.judges import make_judge
            from srscale.evaluation.mtbench import run_mtbench

            judge = make_judge(cfg.eval.mtbench, chat=_judge_chat(ctx, tokens) if cfg.eval.mtbench.judge == "local"
                               else None)
            return run_mtbench(_chat(sampler), judge, cfg.eval.mtbench, out / "mt_bench", model_id=stage)
        plan.append(("mtbench", mt))
    if cfg.eval.head_to_head.enabled:
        def h2h():
            from srscale.evaluation.h2h_stage import head_to_head_stage
            from srscale.evaluation.judges import make_judge

            judge = make_judge(cfg.eval.mtbench, chat=_judge_chat(ctx, tokens) if cfg.eval.mtbench.judge == "local"
                               else None)
            return head_to_head_stage(cfg, _chat(sampler), out, stage, ctx.job.root, data=data, judge=judge)
        plan.append(("head_to_head", h2h))
    return plan


def _chat(get_sampler):
    """A chat callable that asks for its sampler at call time (the engine may have switched models)."""
    from srscale.generation import chat_fn

    def chat(conversations, max_new_tokens):
        return chat_fn(get_sampler())(conversations, max_new_tokens)

    return chat


def _judge_chat(ctx, tokens: TokenCount):
    """The local judge's chat callable: M1 through the job's engine, or a separate model at
    ``eval.mtbench.local_judge_path`` (with its own tokenizer)."""
    cfg = ctx.cfg
    path = cfg.eval.mtbench.local_judge_path
    if not path:
        return _chat(lambda: CountingSampler(ctx.engine.sampler(ctx.m1), tokens))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from srscale.generation import HFSampler

    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).to(ctx.models.device).eval()
    except OSError as exc:
        raise SrscaleError(f"local judge: cannot load a model from eval.mtbench.local_judge_path={path} "
                           f"({type(exc).__name__}); point it at a directory made by save_pretrained") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    judge_sampler = CountingSampler(HFSampler(model, tok, cfg.self_reward.batch_size), tokens)
    return _chat(lambda: judge_sampler)


def load_metrics(path: Path) -> dict:
    return json.loads(path.read_text())
