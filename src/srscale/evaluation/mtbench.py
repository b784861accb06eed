"""MT-Bench in FastChat's formats: answers, single-answer grading, and the summary.

Files follow FastChat's ``fastchat/llm_judge`` layout under an output folder (FastChat's
``data/mt_bench``)::

    model_answer/<model_id>.jsonl          {"question_id", "answer_id", "model_id",
                                            "choices": [{"index": 0, "turns": [a1, a2]}], "tstamp"}
    model_judgment/<judge>_single.jsonl    {"question_id", "model", "judge": [judge, prompt_name],
                                            "user_prompt", "judgment", "score", "turn", "tstamp"}

so FastChat's own ``show_result.py --input-file`` reads them. Grading is FastChat's ``single`` mode:
``single-v1`` for general categories, ``single-math-v1`` with the reference answer for math, reasoning
and coding (``NEED_REF_CATS``), the ``-multi-turn`` variants for turn 2; the rating is read with
FastChat's ``[[rating]]`` pattern and its ``[rating]`` backup.

A judgment without a rating is written with ``score: -1``, which *is* FastChat's file format, but
srscale never averages it: :func:`summarize` drops it exactly as ``show_result.py`` does
(``df[df["score"] != -1]``) and reports it as ``missing``. srscale additionally treats a rating outside
the 1-10 scale as missing (FastChat would keep it).

Nothing here imports ``fastchat.llm_judge.common`` (it needs the old ``openai<1`` client).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError
from srscale.evaluation.judges import ChatFn, complete_batch, judge_name

NEED_REF_CATS = ("math", "reasoning", "coding")  # FastChat common.NEED_REF_CATS
FAILED_SCORE = -1  # FastChat's file value for "no rating"; never averaged here
SCALE = (1.0, 10.0)

ONE_SCORE_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")

# The official 80 MT-Bench questions: question_id -> category (10 per category, in this order).
# Used by summarize() only when no question file is given.
MTBENCH_CATEGORIES: dict[int, str] = {
    qid: cat
    for i, cat in enumerate(
        ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
    )
    for qid in range(81 + 10 * i, 91 + 10 * i)
}

HUB_SPACE = "lmsys/mt-bench"  # FastChat's MT-Bench files, as a Hugging Face space
HUB_FILES = {
    "questions": "data/mt_bench/question.jsonl",
    "references": "data/mt_bench/reference_answer/gpt-4.jsonl",
    "judge_prompts": "data/judge_prompts.jsonl",
}
_SETTING = {
    "questions": "eval.mtbench.question_file",
    "references": "eval.mtbench.reference_file",
    "judge_prompts": "eval.mtbench.judge_prompts_file",
}

SINGLE_PROMPTS = {  # (needs reference, multi-turn) -> FastChat judge prompt name
    (False, False): "single-v1",
    (True, False): "single-math-v1",
    (False, True): "single-v1-multi-turn",
    (True, True): "single-math-v1-multi-turn",
}


# ------------------------------------------------------------------------------------ parsing
def parse_rating(judgment: str, scale: tuple[float, float] | None = SCALE) -> float | int | None:
    """The judge's rating, FastChat's way: ``[[x]]`` first, then ``[x]``; ``None`` when absent.

    FastChat reads the number with ``ast.literal_eval`` (``"7"`` -> ``7``, ``"7.5"`` -> ``7.5``); so do we.
    Unlike FastChat, a rating outside ``scale`` (default 1-10) is ``None``; pass ``scale=None`` to keep it.
    """
    if not judgment:
        return None
    match = ONE_SCORE_PATTERN.search(judgment) or ONE_SCORE_PATTERN_BACKUP.search(judgment)
    if match is None:
        return None
    text = match.group(1)
    value: float | int = float(text) if "." in text else int(text)
    if scale is not None and not (scale[0] <= value <= scale[1]):
        return None
    return value


def is_failed(score: Any) -> bool:
    """True for a judgment row without a usable score (FastChat's -1, null, NaN)."""
    if score is None or isinstance(score, bool):
        return True
    try:
        value = float(score)
    except (TypeError, ValueError):
        return True
    return value == FAILED_SCORE or math.isnan(value)


# ------------------------------------------------------------------------------------ files
def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SrscaleError(f"MT-Bench: file not found: {path}")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise SrscaleError(f"MT-Bench: {path}:{n} is not JSON ({err.msg})") from None
    return rows


def write_jsonl(path: str | Path, rows: Iterable[Mapping], append: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def _file_stem(name: str) -> str:
    return name.replace("/", "_").replace("\\", "_") or "model"


def answer_path(out_dir: str | Path, model_id: str) -> Path:
    """``<out_dir>/model_answer/<model_id>.jsonl`` (FastChat's naming)."""
    return Path(out_dir) / "model_answer" / f"{_file_stem(model_id)}.jsonl"


def judgment_path(out_dir: str | Path, judge_model_name: str) -> Path:
    """``<out_dir>/model_judgment/<judge>_single.jsonl`` (FastChat's naming)."""
    return Path(out_dir) / "model_judgment" / f"{_file_stem(judge_model_name)}_single.jsonl"


def load_questions(path: str | Path) -> list[dict]:
    """FastChat ``question.jsonl``: ``{"question_id", "category", "turns": [...]}`` per line."""
    questions = read_jsonl(path)
    for q in questions:
        missing = [k for k in ("question_id", "category", "turns") if k not in q]
        if missing or not q["turns"]:
            raise SrscaleError(
                f"MT-Bench: {path} is not a FastChat question file (question {q.get('question_id')!r} "
                f"lacks {', '.join(missing) or 'turns'})"
            )
    return questions


def load_answers(path: str | Path) -> dict[Any, dict]:
    """A FastChat ``model_answer`` (or ``reference_answer``) file as ``{question_id: record}``."""
    return {row["question_id"]: row for row in read_jsonl(path)}


def load_answer_dir(answer_dir: str | Path) -> dict[str, dict[Any, dict]]:
    """Every ``<model>.jsonl`` in a folder: ``{model: {question_id: record}}`` (FastChat's loader)."""
    return {p.stem: load_answers(p) for p in sorted(Path(answer_dir).glob("*.jsonl"))}


load_references = load_answers


def load_judge_prompts(path: str | Path) -> dict[str, dict]:
    """FastChat ``judge_prompts.jsonl`` as ``{name: prompt}``."""
    prompts = {row["name"]: row for row in read_jsonl(path)}
    return prompts


def references_from_questions(questions: Iterable[Mapping]) -> dict[Any, dict]:
    """Answer records from the ``reference`` field some question files carry inline."""
    refs = {}
    for q in questions:
        if q.get("reference"):
            refs[q["question_id"]] = {
                "question_id": q["question_id"],
                "model_id": "reference",
                "choices": [{"index": 0, "turns": list(q["reference"])}],
            }
    return refs


def _hub_file(kind: str) -> Path:
    """FastChat's copy of an MT-Bench file from the Hugging Face space, from the cache or the hub."""
    filename = HUB_FILES[kind]
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=HUB_SPACE, repo_type="space", filename=filename))
    except Exception as err:  # noqa: BLE001 - offline, missing package, hub errors: one line
        reason = _one_line(f"{type(err).__name__}: {err}", 100)
        raise SrscaleError(
            f"MT-Bench: no {kind.replace('_', ' ')} file and the hub copy ({HUB_SPACE}/{filename}) is not "
            f"available ({reason}); pass {_SETTING[kind]}=/path/to/{Path(filename).name} "
            "(from FastChat's fastchat/llm_judge/data)"
        ) from None


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def questions_from_hub() -> list[dict]:
    return load_questions(_hub_file("questions"))


def references_from_hub() -> dict[Any, dict]:
    return load_answers(_hub_file("references"))


def judge_prompts_from_hub() -> dict[str, dict]:
    return load_judge_prompts(_hub_file("judge_prompts"))


def select_questions(questions: Sequence[dict], max_questions: int | None) -> list[dict]:
    """At most ``max_questions``, taken round-robin over categories (file order within each), so a
    small budget still covers every category; the result keeps file order."""
    if max_questions is None or max_questions >= len(questions):
        return list(questions)
    by_cat: dict[str, list[int]] = {}
    for i, q in enumerate(questions):
        by_cat.setdefault(q["category"], []).append(i)
    chosen: list[int] = []
    rank = 0
    while len(chosen) < max_questions:
        for idx in by_cat.values():
            if rank < len(idx) and len(chosen) < max_questions:
                chosen.append(idx[rank])
        rank += 1
    return [questions[i] for i in sorted(chosen)]


# ------------------------------------------------------------------------------------ answers
def generate_answers(
    chat: ChatFn, questions: Sequence[Mapping], model_id: str, max_new_tokens: int
) -> list[dict]:
    """Answer every turn of every question, FastChat ``model_answer`` records in question order.

    Turn *k* is one batched ``chat`` call over all questions that have a turn *k*, each conversation
    holding the earlier turns and the model's own earlier answers. Answers are stripped, as FastChat
    does. (FastChat also samples at a per-category temperature; the callable here fixes its decoding.)
    """
    convs: list[list[dict]] = [[] for _ in questions]
    turns: list[list[str]] = [[] for _ in questions]
    n_turns = max((len(q["turns"]) for q in questions), default=0)
    for t in range(n_turns):
        active = [i for i, q in enumerate(questions) if len(q["turns"]) > t]
        for i in active:
            convs[i].append({"role": "user", "content": questions[i]["turns"][t]})
        replies = chat([list(convs[i]) for i in active], max_new_tokens)
        if len(replies) != len(active):
            raise SrscaleError(
                f"MT-Bench: the model returned {len(replies)} replies for {len(active)} prompts"
            )
        for i, reply in zip(active, replies, strict=True):
            reply = (reply or "").strip()
            convs[i].append({"role": "assistant", "content": reply})
            turns[i].append(reply)
    now = time.time()
    return [
        {
            "question_id": q["question_id"],
            "answer_id": uuid.uuid4().hex[:22],
            "model_id": model_id,
            "choices": [{"index": 0, "turns": turns[i]}],
            "tstamp": now,
        }
        for i, q in enumerate(questions)
    ]


# ------------------------------------------------------------------------------------ judging
def _answer_turns(record: Mapping) -> list[str]:
    return list(record["choices"][0]["turns"])


def build_single_prompt(
    question: Mapping,
    answer: Mapping,
    judge_prompts: Mapping[str, Mapping],
    reference: Mapping | None = None,
    turn: int = 1,
) -> tuple[str, str, str]:
    """``(prompt_name, system, user)`` for one FastChat single-answer judgment of ``turn`` (1 or 2)."""
    needs_ref = question["category"] in NEED_REF_CATS
    name = SINGLE_PROMPTS[(needs_ref, turn == 2)]
    if name not in judge_prompts:
        raise SrscaleError(f"MT-Bench: judge prompt '{name}' is missing from the judge prompts file")
    template = judge_prompts[name]
    kwargs: dict[str, str] = {}
    if needs_ref:
        if reference is None:
            raise SrscaleError(
                f"MT-Bench: question {question['question_id']} ({question['category']}) needs a reference "
                "answer; pass eval.mtbench.reference_file=/path/to/reference_answer/gpt-4.jsonl"
            )
        ref = _answer_turns(reference) + ["", ""]
        kwargs = {"ref_answer_1": ref[0], "ref_answer_2": ref[1]}
    ans = _answer_turns(answer)
    if turn == 2:
        user = template["prompt_template"].format(
            question_1=question["turns"][0],
            question_2=question["turns"][1],
            answer_1=ans[0],
            answer_2=ans[1],
            **kwargs,
        )
    else:
        user = template["prompt_template"].format(question=question["turns"][0], answer=ans[0], **kwargs)
    return name, template["system_prompt"], user


def judge_answers(
    judge,
    questions: Sequence[Mapping],
    answers: Iterable[Mapping] | Mapping[Any, Mapping],
    judge_prompts: Mapping[str, Mapping],
    references: Mapping[Any, Mapping] | None = None,
    judge_model_name: str | None = None,
    max_tokens: int = 2048,
    skip: Iterable[tuple] = (),
) -> list[dict]:
    """FastChat single-answer grading of ``answers`` (records of one or more models).

    Turn 1 of every answered question and turn 2 of every two-turn question, in one judge batch.
    ``references`` maps question_id to a reference answer record (needed for NEED_REF_CATS);
    ``skip`` holds ``(model, question_id, turn)`` already judged (resume). Returns FastChat
    ``model_judgment`` records; a judgment without a rating has ``score: -1``.
    """
    records = list(answers.values()) if isinstance(answers, Mapping) else list(answers)
    by_q: dict[Any, list[Mapping]] = {}
    for rec in records:
        by_q.setdefault(rec["question_id"], []).append(rec)
    done = set(skip)
    references = references or {}
    name = judge_model_name or judge_name(judge)

    jobs: list[tuple[Mapping, str, int, str, str, str]] = []  # question, model, turn, prompt, sys, user
    for q in questions:
        for rec in by_q.get(q["question_id"], []):
            model = rec["model_id"]
            for turn in (1, 2) if len(q["turns"]) == 2 else (1,):
                if (model, q["question_id"], turn) in done:
                    continue
                if len(_answer_turns(rec)) < turn:
                    raise SrscaleError(
                        f"MT-Bench: answer of {model} to question {q['question_id']} has no turn {turn}"
                    )
                prompt_name, system, user = build_single_prompt(
                    q, rec, judge_prompts, references.get(q["question_id"]), turn
                )
                jobs.append((q, model, turn, prompt_name, system, user))

    texts = complete_batch(judge, [(j[4], j[5]) for j in jobs], max_tokens)
    out = []
    now = time.time()
    for (q, model, turn, prompt_name, _system, user), text in zip(jobs, texts, strict=True):
        rating = parse_rating(text)
        out.append(
            {
                "question_id": q["question_id"],
                "model": model,
                "judge": [name, prompt_name],
                "user_prompt": user,
                "judgment": text,
                "score": FAILED_SCORE if rating is None else rating,
                "turn": turn,
                "tstamp": now,
            }
        )
    return out


# ------------------------------------------------------------------------------------ summary
def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(
    judgments: Iterable[Mapping],
    questions: Iterable[Mapping] | None = None,
    models: Iterable[str] | None = None,
) -> dict[str, dict]:
    """Per model, FastChat ``show_result.py --mode single`` numbers, plus categories and counts.

    Rows whose score is -1 (or null) are dropped first, as FastChat does; then per model: ``turn1``
    and ``turn2`` are the means of that turn's rows, ``score`` the mean over all remaining rows (not
    the mean of the two turn means), ``categories`` the mean per category over both turns. A mean
    with no rows is ``None``. Counts: ``n`` rows, ``scored``, ``missing`` (failed ratings), and the same
    per turn. Categories come from ``questions``, else from the official MT-Bench question ids.
    """
    cat_of = (
        {q["question_id"]: q["category"] for q in questions} if questions is not None else MTBENCH_CATEGORIES
    )
    keep = set(models) if models is not None else None
    acc: dict[str, dict[str, Any]] = {}
    for row in judgments:
        if not all(k in row for k in ("question_id", "model", "turn")):
            raise SrscaleError(
                "MT-Bench: not a FastChat single-grading judgment record (needs question_id, model, turn, "
                f"score): {sorted(row)}"
            )
        model = row["model"]
        if keep is not None and model not in keep:
            continue
        a = acc.setdefault(
            model, {"turn": {}, "cat": {}, "all": [], "n": 0, "missing": 0, "turn_missing": {}}
        )
        a["n"] += 1
        turn = int(row["turn"])
        if is_failed(row.get("score")):
            a["missing"] += 1
            a["turn_missing"][turn] = a["turn_missing"].get(turn, 0) + 1
            a["turn"].setdefault(turn, [])
            continue
        score = float(row["score"])
        a["all"].append(score)
        a["turn"].setdefault(turn, []).append(score)
        cat = cat_of.get(row["question_id"], "unknown")
        a["cat"].setdefault(cat, []).append(score)

    out: dict[str, dict] = {}
    for model in sorted(acc):
        a = acc[model]
        out[model] = {
            "turn1": _mean(a["turn"].get(1, [])),
            "turn2": _mean(a["turn"].get(2, [])),
            "score": _mean(a["all"]),
            "categories": {c: _mean(v) for c, v in sorted(a["cat"].items())},
            "n": a["n"],
            "scored": len(a["all"]),
            "missing": a["missing"],
            "turn1_scored": len(a["turn"].get(1, [])),
            "turn2_scored": len(a["turn"].get(2, [])),
            "turn1_missing": a["turn_missing"].get(1, 0),
            "turn2_missing": a["turn_missing"].get(2, 0),
        }
    return out


def summarize_file(path: str | Path, questions=None, models=None) -> dict[str, dict]:
    return summarize(read_jsonl(path), questions=questions, models=models)


def metrics(model_summary: Mapping[str, Any], prefix: str = "mtbench") -> dict[str, float]:
    """Flat tracker metrics for one model's summary; means without rows are left out."""
    out: dict[str, float] = {}
    for key in ("turn1", "turn2", "score"):
        if model_summary.get(key) is not None:
            out[f"{prefix}/{key}"] = float(model_summary[key])
    for cat, value in model_summary.get("categories", {}).items():
        if value is not None:
            out[f"{prefix}/{cat}"] = float(value)
    out[f"{prefix}/scored"] = float(model_summary.get("scored", 0))
    out[f"{prefix}/missing"] = float(model_summary.get("missing", 0))
    return out


def format_table(summary: Mapping[str, Mapping], title: str | None = None) -> str:
    """A readable table: turn 1, turn 2, overall and counts per model, then per-category means."""

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [title] if title else []
    if not summary:
        lines.append("(no judgments)")
        return "\n".join(lines)
    width = max(12, *(len(m) for m in summary)) + 2
    lines.append(f"{'model':<{width}}{'turn 1':>8}{'turn 2':>8}{'overall':>9}{'scored':>8}{'missing':>9}")
    order = sorted(summary, key=lambda m: -(summary[m]["score"] if summary[m]["score"] is not None else -1e9))
    for m in order:
        s = summary[m]
        lines.append(
            f"{m:<{width}}{fmt(s['turn1']):>8}{fmt(s['turn2']):>8}{fmt(s['score']):>9}"
            f"{s['scored']:>8}{s['missing']:>9}"
        )
    cats = sorted({c for s in summary.values() for c in s["categories"]})
    if cats:
        lines.append("")
        lines.append("per category (mean over both turns)")
        cw = max(8, *(len(c) for c in cats)) + 2
        lines.append(f"{'model':<{width}}" + "".join(f"{c:>{cw}}" for c in cats))
        for m in order:
            row = summary[m]["categories"]
            lines.append(f"{m:<{width}}" + "".join(f"{fmt(row.get(c)):>{cw}}" for c in cats))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ stage
def load_inputs(cfg) -> tuple[list[dict], dict[Any, dict], dict[str, dict]]:
    """Questions (capped by ``cfg.max_questions``), references and judge prompts an MTBenchConfig names.

    A file left unset comes from FastChat's hub copy (Hugging Face space ``lmsys/mt-bench``); the
    references fall back to the ``reference`` fields of the question file.
    """
    questions = load_questions(cfg.question_file) if cfg.question_file else questions_from_hub()
    questions = select_questions(questions, cfg.max_questions)
    judge_prompts = (
        load_judge_prompts(cfg.judge_prompts_file) if cfg.judge_prompts_file else judge_prompts_from_hub()
    )
    references = references_from_questions(questions)
    needs_ref = any(q["category"] in NEED_REF_CATS for q in questions)
    if cfg.reference_file:
        references.update(load_answers(cfg.reference_file))
    elif needs_ref and any(
        q["category"] in NEED_REF_CATS and q["question_id"] not in references for q in questions
    ):
        references.update(references_from_hub())
    return questions, references, judge_prompts


def run_mtbench(
    chat: ChatFn,
    judge,
    cfg,
    out_dir: str | Path,
    model_id: str,
    *,
    questions: Sequence[dict] | None = None,
    references: Mapping[Any, Mapping] | None = None,
    judge_prompts: Mapping[str, Mapping] | None = None,
) -> dict[str, float]:
    """Answer, judge and summarize MT-Bench for one model; FastChat files under ``out_dir``.

    Resumable: answers already in ``model_answer/<model_id>.jsonl`` and judgments already in
    ``model_judgment/<judge>_single.jsonl`` are kept; only the missing ones are made (and appended).
    Returns ``mtbench/turn1``, ``mtbench/turn2``, ``mtbench/score``, ``mtbench/<category>``,
    ``mtbench/scored`` and ``mtbench/missing``.
    """
    if questions is None or judge_prompts is None or references is None:
        q, r, p = load_inputs(cfg)
        questions = q if questions is None else select_questions(list(questions), cfg.max_questions)
        references = r if references is None else references
        judge_prompts = p if judge_prompts is None else judge_prompts
    questions = list(questions)
    name = judge_name(judge)

    a_path = answer_path(out_dir, model_id)
    existing = load_answers(a_path) if a_path.is_file() else {}
    todo = [
        q
        for q in questions
        if q["question_id"] not in existing
        or len(_answer_turns(existing[q["question_id"]])) < len(q["turns"])
    ]
    if todo:
        fresh = generate_answers(chat, todo, model_id, cfg.max_new_tokens)
        existing.update({rec["question_id"]: rec for rec in fresh})
        # rewrite in question order so the file holds one record per question
        order = [q["question_id"] for q in questions]
        extra = [qid for qid in existing if qid not in set(order)]
        write_jsonl(a_path, [existing[qid] for qid in order + extra])
    answers = [existing[q["question_id"]] for q in questions]

    j_path = judgment_path(out_dir, name)
    previous = read_jsonl(j_path) if j_path.is_file() else []
    done = {(r["model"], r["question_id"], int(r["turn"])) for r in previous}
    new = judge_answers(
        judge, questions, answers, judge_prompts, references, name, max_tokens=cfg.judge_max_tokens, skip=done
    )
    if new:
        write_jsonl(j_path, new, append=True)

    qids = {q["question_id"] for q in questions}
    mine = [r for r in previous + new if r["model"] == model_id and r["question_id"] in qids]
    summary = summarize(mine, questions=questions).get(model_id)
    if summary is None:
        return {"mtbench/scored": 0.0, "mtbench/missing": 0.0}
    return metrics(summary)
