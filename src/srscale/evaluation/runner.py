"""Run the evaluations ``cfg.eval`` selects on one stage's model and log them (via the pipeline's Job).

Stages: ``sft`` (M1), ``seed_dpo``, ``iter_<t>`` (the model after iteration t). Metrics are logged as
``eval/<name>`` with the iteration as step. Each evaluation is independent: a failing one (a missing
judge key, an unreachable endpoint, absent benchmark files) is logged as one line and tagged, and the
others keep their results. Evaluation decoding is greedy so stages compare without sampling noise.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError
from srscale.generation import SamplingParams, generate_texts, render_chat, user_turn
from srscale.seed_data import SeedData, write_json, write_jsonl

log = logging.getLogger(__name__)


def reward_model_eval(model, tok, cfg, data: SeedData, out: Path, seed: int) -> dict[str, float]:
    """Judge every held-out (prompt, response) once, greedily; compare with the gold scores."""
    from srscale.evaluation.reward_metrics import reward_model_metrics
    from srscale.pipeline import judge_items, scores_by_item

    rows = data.eft_eval[: cfg.eval.max_items]
    flat = [(r["prompt"], resp) for r in rows for resp in r["responses"]]
    records = judge_items(model, tok, cfg, flat, samples=1, seed=seed, gate=None, desc="eval judge",
                          temperature=0.0)
    per = scores_by_item(records, len(flat), 1)
    items, k = [], 0
    for r in rows:
        n = len(r["responses"])
        items.append({"gold": r["gold"], "pred": [s[0] if s else None for s in per[k:k + n]]})
        k += n
    write_jsonl(out / "reward_model_judgments.jsonl", records)
    metrics = reward_model_metrics(items)
    return {f"rm/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}


def task_accuracy_eval(model, tok, cfg, data: SeedData, out: Path, seed: int) -> dict[str, float]:
    """Greedy answers to the held-out prompts, graded by the suite's checkers, overall and per family."""
    from srscale.suite.families import grade

    rows = data.heldout[: cfg.eval.max_items]
    texts = [render_chat(tok, user_turn(r["prompt"])) for r in rows]
    outs = generate_texts(model, tok, texts, SamplingParams(cfg.self_reward.max_new_tokens, 0.0),
                          batch_size=cfg.self_reward.batch_size, seed=seed, desc="eval answers")
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
    for dotted, rel in DATA_ROOT_LAYOUT.items():
        section, key = dotted.split(".")
        target = getattr(eval_cfg, section)
        if getattr(target, key) is None:
            setattr(target, key, str(root / rel) if rel != "." else str(root))


def evaluate_stage(job, models, data: SeedData, model_dir: Path | None, stage: str, step: int) -> dict[str, Any]:
    """Run the configured evaluations for ``stage`` (resumable: a finished stage is not redone)."""
    from srscale.pipeline import mark_done, stage_record

    cfg = job.cfg
    fill_from_data_root(cfg.eval)
    out = job.dir(f"eval/{stage}")
    rec = stage_record(out)
    if rec is None:
        loaded = models.load(model_dir)
        metrics: dict[str, float] = {}
        errors: dict[str, str] = {}
        plan = []
        if cfg.eval.reward_model and data.eft_eval:
            plan.append(("reward_model", lambda: reward_model_eval(loaded.model, loaded.tokenizer, cfg, data, out,
                                                                   cfg.seed)))
        if cfg.eval.task_accuracy and data.verifiable and data.heldout:
            plan.append(("task_accuracy", lambda: task_accuracy_eval(loaded.model, loaded.tokenizer, cfg, data,
                                                                     out, cfg.seed)))
        plan.extend(_optional_evals(cfg, loaded, out, stage, job.root, data))
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
        rec = mark_done(out, {"stage": stage, "step": step, "metrics": metrics, "errors": errors})
        write_json(out / "metrics.json", metrics)
    job.log_once(out, {f"eval/{k}": v for k, v in rec["metrics"].items() if v is not None}, step=step,
                 artifacts=[(out, f"eval/{stage}")])
    if rec["errors"]:
        job.tracker.set_tags({f"eval_error.{k}.{stage}": v[:400] for k, v in rec["errors"].items()})
    return rec


def _judge_chat(cfg, loaded):
    """The chat callable a local judge uses: a separate model at ``local_judge_path``, else the stage's."""
    from srscale.generation import model_chat_fn

    path = cfg.eval.mtbench.local_judge_path
    if not path:
        return model_chat_fn(loaded.model, loaded.tokenizer, batch_size=cfg.self_reward.batch_size)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path).to(next(loaded.model.parameters()).device).eval()
    except OSError as exc:
        raise SrscaleError(f"local judge: cannot load a model from eval.mtbench.local_judge_path={path} "
                           f"({type(exc).__name__}); point it at a directory made by save_pretrained") from None
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model_chat_fn(model, tok, batch_size=cfg.self_reward.batch_size)


def _optional_evals(cfg, loaded, out: Path, stage: str, root: Path, data: SeedData) -> list:
    """lm-eval, MT-Bench and head-to-head, when enabled (each may need files, a judge or network)."""
    plan = []
    if cfg.eval.lm_eval.enabled:
        def lm():
            from srscale.evaluation.lmeval import run_lm_eval

            return {f"lm_eval/{k}": v for k, v in run_lm_eval(loaded.model, loaded.tokenizer, cfg.eval.lm_eval,
                                                               out).items()}
        plan.append(("lm_eval", lm))
    if cfg.eval.mtbench.enabled:
        def mt():
            from srscale.evaluation.judges import make_judge
            from srscale.evaluation.mtbench import run_mtbench
            from srscale.generation import model_chat_fn

            chat = model_chat_fn(loaded.model, loaded.tokenizer, batch_size=cfg.self_reward.batch_size)
            judge = make_judge(cfg.eval.mtbench, chat=_judge_chat(cfg, loaded) if cfg.eval.mtbench.judge == "local"
                               else None)
            return run_mtbench(chat, judge, cfg.eval.mtbench, out / "mt_bench", model_id=stage)
        plan.append(("mtbench", mt))
    if cfg.eval.head_to_head.enabled:
        def h2h():
            from srscale.evaluation.h2h_stage import head_to_head_stage
            from srscale.evaluation.judges import make_judge

            judge = make_judge(cfg.eval.mtbench, chat=_judge_chat(cfg, loaded) if cfg.eval.mtbench.judge == "local"
                               else None)
            return head_to_head_stage(cfg, loaded, out, stage, root, data=data, judge=judge)
        plan.append(("head_to_head", h2h))
    return plan


def load_metrics(path: Path) -> dict:
    return json.loads(path.read_text())
