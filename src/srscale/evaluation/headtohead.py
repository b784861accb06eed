"""Head-to-head win rates: the paper's pairwise protocol, and win rate against AlpacaEval references.

Each prompt is judged twice with FastChat's ``pair-v2`` prompt, once with model A's answer shown first
and once with it second; the verdicts (``[[A]]``, ``[[B]]``, ``[[C]]`` for a tie) are mapped back to
the models. Agreement gives a win or a loss; a tie in either order, or verdicts that disagree across
the two orders (position bias), count as a tie, as FastChat's ``show_result.py`` does. A prompt where
either judgment has no verdict is *failed*: counted, reported, and left out of ``n`` and the rate.

    win_rate = (wins + 0.5 * ties) / n,   n = wins + losses + ties

(FastChat's ``win_rate_adjusted``). Against AlpacaEval's references the outcomes are written as AlpacaEval
annotations and scored by the ``alpaca_eval`` package (:mod:`srscale.evaluation.alpacaeval`). Mean response lengths of both sides, in characters and in
whitespace-separated words, are reported beside it, since judges favour longer answers.

The verdict parsing (:func:`parse_verdict`, :func:`combine_orders`, :func:`tally`) is pure;
:func:`compare` and :func:`alpaca_eval_winrate` do the I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from srscale.errors import SrscaleError
from srscale.evaluation.judges import ChatFn, complete_batch

PAIR_PROMPT = "pair-v2"
VERDICT_PATTERN = re.compile(r"\[\[([ABC])\]\]")
_VERDICT = {"A": "A", "B": "B", "C": "tie"}


# ------------------------------------------------------------------------------------ pure parsing
def parse_verdict(judgment: str | None) -> str | None:
    """``"A"``, ``"B"``, ``"tie"`` or ``None`` (no verdict) from a pair-v2 judgment.

    The prompt asks for the verdict after the explanation, so the *last* ``[[A]]``/``[[B]]``/``[[C]]``
    counts (FastChat takes the first of A, B, C to appear in that priority, which favours A when an
    explanation quotes the format).
    """
    if not judgment:
        return None
    found = VERDICT_PATTERN.findall(judgment)
    return _VERDICT[found[-1]] if found else None


def combine_orders(verdict_ab: str | None, verdict_ba: str | None) -> str | None:
    """Outcome for model A from the two orders: ``"win"``, ``"loss"``, ``"tie"`` or ``None`` (failed).

    ``verdict_ab`` judged A's answer shown first (as assistant A); ``verdict_ba`` judged it shown second
    (as assistant B). A tie in either order or disagreement between them is a tie.
    """
    if verdict_ab is None or verdict_ba is None:
        return None
    first = {"A": "a", "B": "b"}.get(verdict_ab, "tie")
    second = {"A": "b", "B": "a"}.get(verdict_ba, "tie")
    if first == "tie" or first != second:
        return "tie"
    return "win" if first == "a" else "loss"


def _words(text: str) -> int:
    return len(text.split())


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class HeadToHeadResult:
    """Outcome counts for side A against side B, with the mean response lengths of both."""

    wins: int = 0
    losses: int = 0
    ties: int = 0
    failed: int = 0
    length_a_chars: float | None = None
    length_b_chars: float | None = None
    length_a_words: float | None = None
    length_b_words: float | None = None
    items: list[dict] = field(default_factory=list, repr=False)

    @property
    def n(self) -> int:
        """Decided comparisons (wins + losses + ties); failed ones are not counted."""
        return self.wins + self.losses + self.ties

    @property
    def win_rate(self) -> float | None:
        """(wins + 0.5 * ties) / n; ``None`` when nothing was decided."""
        return (self.wins + 0.5 * self.ties) / self.n if self.n else None

    def metrics(self, prefix: str = "h2h") -> dict[str, float]:
        out = {
            f"{prefix}/wins": float(self.wins),
            f"{prefix}/losses": float(self.losses),
            f"{prefix}/ties": float(self.ties),
            f"{prefix}/failed": float(self.failed),
            f"{prefix}/n": float(self.n),
        }
        if self.win_rate is not None:
            out[f"{prefix}/win_rate"] = self.win_rate
        for key in ("length_a_chars", "length_b_chars", "length_a_words", "length_b_words"):
            value = getattr(self, key)
            if value is not None:
                out[f"{prefix}/{key}"] = float(value)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("items")
        d.update(n=self.n, win_rate=self.win_rate)
        return d


def tally(
    outcomes: Sequence[str | None], answers_a: Sequence[str], answers_b: Sequence[str]
) -> HeadToHeadResult:
    """Counts from per-prompt outcomes (see :func:`combine_orders`) and the two sides' lengths."""
    result = HeadToHeadResult()
    for outcome in outcomes:
        if outcome == "win":
            result.wins += 1
        elif outcome == "loss":
            result.losses += 1
        elif outcome == "tie":
            result.ties += 1
        elif outcome is None:
            result.failed += 1
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
    result.length_a_chars = _mean([len(a) for a in answers_a])
    result.length_b_chars = _mean([len(b) for b in answers_b])
    result.length_a_words = _mean([_words(a) for a in answers_a])
    result.length_b_words = _mean([_words(b) for b in answers_b])
    return result


# ------------------------------------------------------------------------------------ judging
def _pair_prompt(judge_prompts: Mapping[str, Mapping] | None) -> Mapping:
    if judge_prompts is None:
        from srscale.evaluation.mtbench import judge_prompts_from_hub

        judge_prompts = judge_prompts_from_hub()
    if PAIR_PROMPT not in judge_prompts:
        raise SrscaleError(
            f"head-to-head: judge prompt '{PAIR_PROMPT}' is missing from the judge prompts file"
        )
    return judge_prompts[PAIR_PROMPT]


def compare(
    judge,
    prompts: Sequence[str],
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    judge_prompts: Mapping[str, Mapping] | None = None,
    max_tokens: int = 1024,
) -> HeadToHeadResult:
    """A against B on ``prompts``, each judged in both orders (2 x len(prompts) judgments, one batch).

    ``judge_prompts`` is FastChat's judge prompts (``{name: prompt}``, see
    :func:`srscale.evaluation.mtbench.load_judge_prompts`); ``None`` loads the hub copy.
    ``result.items`` keeps, per prompt, both judgments, both verdicts and the outcome.
    """
    if not (len(prompts) == len(answers_a) == len(answers_b)):
        raise SrscaleError(
            f"head-to-head: {len(prompts)} prompts but {len(answers_a)} and {len(answers_b)} answers"
        )
    template = _pair_prompt(judge_prompts)
    system = template["system_prompt"]
    requests = []
    for q, a, b in zip(prompts, answers_a, answers_b, strict=True):
        requests.append((system, template["prompt_template"].format(question=q, answer_a=a, answer_b=b)))
        requests.append((system, template["prompt_template"].format(question=q, answer_a=b, answer_b=a)))
    texts = complete_batch(judge, requests, max_tokens)

    outcomes, items = [], []
    for i, q in enumerate(prompts):
        g1, g2 = texts[2 * i], texts[2 * i + 1]
        v1, v2 = parse_verdict(g1), parse_verdict(g2)
        outcome = combine_orders(v1, v2)
        outcomes.append(outcome)
        items.append(
            {
                "prompt": q,
                "answer_a": answers_a[i],
                "answer_b": answers_b[i],
                "g1_judgment": g1,
                "g2_judgment": g2,
                "g1_verdict": v1,
                "g2_verdict": v2,
                "outcome": outcome,
            }
        )
    result = tally(outcomes, answers_a, answers_b)
    result.items = items
    return result


def answer_prompts(chat: ChatFn, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """One single-turn answer per prompt, in one batched ``chat`` call (stripped)."""
    if not prompts:
        return []
    answers = chat([[{"role": "user", "content": p}] for p in prompts], max_new_tokens)
    if len(answers) != len(prompts):
        raise SrscaleError(
            f"head-to-head: the model returned {len(answers)} replies for {len(prompts)} prompts"
        )
    return [(a or "").strip() for a in answers]


# ------------------------------------------------------------------------------------ AlpacaEval
def load_alpaca_eval(path: str | Path) -> list[dict]:
    """AlpacaEval ``model_outputs.json``: a JSON list of ``{"instruction", "output", "generator", ...}``."""
    path = Path(path)
    if not path.is_file():
        raise SrscaleError(
            f"head-to-head: AlpacaEval file not found: {path}; set eval.head_to_head.alpaca_eval_file="
        )
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SrscaleError(f"head-to-head: {path} is not JSON ({err.msg})") from None
    if not isinstance(rows, list) or not all(
        isinstance(r, dict) and "instruction" in r and "output" in r for r in rows
    ):
        raise SrscaleError(
            f"head-to-head: {path} is not an AlpacaEval model_outputs.json (a list of instruction/output records)"
        )
    return rows


def spread(items: Sequence[Any], max_items: int | None) -> list[Any]:
    """At most ``max_items`` items, evenly spaced over the list (AlpacaEval is ordered by source set)."""
    if max_items is None or max_items >= len(items):
        return list(items)
    if max_items <= 0:
        return []
    step = len(items) / max_items
    return [items[int(i * step)] for i in range(max_items)]


@dataclass
class AlpacaEvalResult(HeadToHeadResult):
    """A head-to-head against AlpacaEval's references, scored by the ``alpaca_eval`` package.

    ``alpaca_eval`` holds the package's metrics in percent, as on its leaderboard (see
    :func:`srscale.evaluation.alpacaeval.winrate_metrics`); ``annotations`` are the comparisons in
    AlpacaEval's ``annotations.json`` format. ``win_rate`` and :meth:`metrics` give the same numbers as
    fractions, like every other head-to-head rate.
    """

    generator: str = "srscale"
    alpaca_eval: dict[str, Any] = field(default_factory=dict)
    annotations: list[dict] = field(default_factory=list, repr=False)

    @property
    def win_rate(self) -> float | None:
        value = self.alpaca_eval.get("win_rate")
        return None if value is None else value / 100

    def metrics(self, prefix: str = "h2h") -> dict[str, float]:
        out = super().metrics(prefix)
        for key, name in (("standard_error", "standard_error"), ("discrete_win_rate", "discrete_win_rate"),
                          ("length_controlled_winrate", "length_controlled_win_rate"),
                          ("lc_standard_error", "lc_standard_error")):
            value = self.alpaca_eval.get(key)
            if value is not None:
                out[f"{prefix}/{name}"] = value / 100
        return out

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("annotations", None)
        return d


def alpaca_eval_winrate(
    judge,
    chat: ChatFn,
    instructions_with_reference: Sequence[Mapping] | str | Path,
    max_items: int | None = None,
    *,
    max_new_tokens: int = 512,
    judge_prompts: Mapping[str, Mapping] | None = None,
    judge_max_tokens: int = 1024,
    generator: str = "srscale",
    length_controlled: bool = True,
) -> AlpacaEvalResult:
    """Win rate of the model (``generator``) against AlpacaEval reference outputs, by AlpacaEval's metrics.

    ``instructions_with_reference``: records (or the path of a ``model_outputs.json``) with
    ``instruction`` and the reference ``output``; ``max_items`` of them, evenly spaced. Each keeps its
    position in that list as ``alpaca_eval_index`` (AlpacaEval's length-controlled GLM looks up each
    instruction's difficulty by its position in the 805-instruction set: pass the whole file, or records
    that carry ``alpaca_eval_index``). The model answers each instruction in one batched ``chat`` call;
    the judge is FastChat's pair-v2 in both orders (the paper's protocol, not AlpacaEval's GPT-4
    annotator, so the rates are comparable with its leaderboard in method, not in value). The outcomes
    become AlpacaEval annotations and the ``alpaca_eval`` package computes win rate, standard error,
    discrete win rate, and the length-controlled win rate where its hub inputs are available.
    """
    from srscale.evaluation.alpacaeval import INDEX_KEY, REFERENCE_GENERATOR, to_annotations, winrate_metrics

    records = (
        load_alpaca_eval(instructions_with_reference)
        if isinstance(instructions_with_reference, (str, Path))
        else list(instructions_with_reference)
    )
    chosen = spread(list(enumerate(records)), max_items)
    indices = [r.get(INDEX_KEY, i) for i, r in chosen]
    records = [r for _, r in chosen]
    instructions = [r["instruction"] for r in records]
    references = [r["output"] for r in records]
    answers = answer_prompts(chat, instructions, max_new_tokens)
    res = compare(judge, instructions, answers, references, judge_prompts, max_tokens=judge_max_tokens)
    reference_generator = records[0].get("generator", REFERENCE_GENERATOR) if records else REFERENCE_GENERATOR
    annotations = to_annotations(res.items, generator, reference_generator, indices=indices,
                                 datasets=[r.get("dataset") for r in records])
    result = AlpacaEvalResult(**{k: getattr(res, k) for k in ("wins", "losses", "ties", "failed", "length_a_chars",
                                                              "length_b_chars", "length_a_words",
                                                              "length_b_words", "items")},
                              generator=generator, annotations=annotations)
    if annotations:
        result.alpaca_eval = winrate_metrics(annotations, length_controlled=length_controlled)
    return result
