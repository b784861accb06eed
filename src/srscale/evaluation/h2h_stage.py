"""Head-to-head evaluation of one stage: against the SFT model, the previous stage, and AlpacaEval references.

Each stage answers the same prompts (the seed data's held-out prompts, else AlpacaEval instructions)
greedily and keeps its answers in ``eval/<stage>/h2h_answers.jsonl``; later stages are compared with
those files, judged in both orders (the paper's protocol). The judge is the one configured under
``eval.mtbench`` (GPT-4, an OpenAI-compatible endpoint, or a local model).
"""

from __future__ import annotations

from pathlib import Path

from srscale.seed_data import read_jsonl, write_json, write_jsonl


def _stage_order(root: Path, stage: str) -> list[str]:
    """Stages evaluated before ``stage`` (by directory), oldest first."""
    names = ["sft", "seed_dpo"] + [f"iter_{t}" for t in range(1, 1000)]
    if stage not in names:
        return []
    earlier = names[: names.index(stage)]
    return [s for s in earlier if (root / "eval" / s / "h2h_answers.jsonl").exists()]


def targets_for(earlier: list[str]) -> dict[str, str]:
    """Which earlier stages a stage is compared with (pure): the SFT model and the previous stage, the
    latter only when it is not the SFT model itself (iteration 1's previous stage *is* SFT: one
    comparison, not the same one judged twice)."""
    out = {}
    if "sft" in earlier:
        out["vs_sft"] = "sft"
    if earlier and earlier[-1] != "sft":
        out["vs_previous"] = earlier[-1]
    return out


def head_to_head_stage(cfg, chat, out: Path, stage: str, root: Path, data=None, judge=None) -> dict[str, float]:
    """``chat``: the stage model's chat callable; ``judge``: the job's fixed judge."""
    from srscale.evaluation.headtohead import (
        alpaca_eval_winrate,
        answer_prompts,
        compare,
        load_alpaca_eval,
        spread,
    )
    from srscale.evaluation.judges import make_judge
    from srscale.evaluation.mtbench import judge_prompts_from_hub, load_judge_prompts

    h = cfg.eval.head_to_head
    judge = judge or make_judge(cfg.eval.mtbench, chat=None, setting="eval.mtbench")
    mt = cfg.eval.mtbench
    prompts_table = load_judge_prompts(mt.judge_prompts_file) if mt.judge_prompts_file else judge_prompts_from_hub()

    if data is not None and data.heldout:
        prompts = [r["prompt"] for r in data.heldout[: h.max_prompts]]
    elif h.alpaca_eval_file:
        prompts = [r["instruction"] for r in spread(load_alpaca_eval(h.alpaca_eval_file), h.max_prompts)]
    else:
        prompts = []
    metrics: dict[str, float] = {}
    if prompts:
        answers = answer_prompts(chat, prompts, h.max_new_tokens)
        write_jsonl(out / "h2h_answers.jsonl", [{"prompt": p, "answer": a} for p, a in zip(prompts, answers, strict=True)])
        for label, other in targets_for(_stage_order(root, stage)).items():
            theirs = {r["prompt"]: r["answer"] for r in read_jsonl(root / "eval" / other / "h2h_answers.jsonl")}
            common = [(p, a, theirs[p]) for p, a in zip(prompts, answers, strict=True) if p in theirs]
            if not common:
                continue
            res = compare(judge, [c[0] for c in common], [c[1] for c in common], [c[2] for c in common],
                          prompts_table, max_tokens=mt.judge_max_tokens)
            write_json(out / f"h2h_{label}.json", {"against": other, **res.metrics(f"h2h/{label}")})
            metrics.update(res.metrics(f"h2h/{label}"))
    if h.alpaca_eval_file:
        from srscale.evaluation.alpacaeval import write_annotations

        res = alpaca_eval_winrate(judge, chat, h.alpaca_eval_file, h.max_prompts, max_new_tokens=h.max_new_tokens,
                                  judge_prompts=prompts_table, judge_max_tokens=mt.judge_max_tokens,
                                  generator=f"{cfg.model.name}|{stage}")
        write_annotations(out / "alpaca_eval" / "annotations.json", res.annotations)
        write_json(out / "alpaca_eval" / "metrics.json", res.alpaca_eval)
        metrics.update(res.metrics("h2h/alpaca_eval"))
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
