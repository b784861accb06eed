"""Preference pairs from self-judged candidates (pure).

For each prompt the model wrote N candidates and judged each K times. A candidate's score is the mean of
its *valid* judge samples (:func:`srscale.judging.aggregate`); a candidate with no valid sample has no
score and is excluded, never treated as 0 or -1. Candidates with identical text are one response judged
more often: their samples are pooled (small models often repeat themselves, and a pair whose chosen and
rejected texts are equal teaches DPO nothing). A prompt with fewer than two distinct scored candidates
gives no pair. Strategies:

* ``max_min`` (the paper): chosen = highest mean, rejected = lowest mean; equal → tie, no pair.
* ``max_random``: chosen = highest mean, rejected = a random candidate with a strictly lower mean
  (seeded ``rng``); none lower → tie, no pair.

Among equal maxima (and equal minima) the first candidate in input order is taken, so results do not
depend on dictionary or hash order. Every prompt lands in exactly one bucket:
``prompts == pairs + ties + too_few_valid`` (``all_failed`` is the part of ``too_few_valid`` where not
one candidate got a valid score).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from srscale.judging import aggregate, is_valid_score

STRATEGIES = ("max_min", "max_random")


@dataclass
class Candidate:
    """One response to a prompt and its per-sample judge scores (None: that sample failed to parse)."""

    text: str
    scores: list[float | None] = field(default_factory=list)

    @property
    def score(self) -> float | None:
        """Mean of the valid samples, None when none parsed."""
        return aggregate(self.scores)


@dataclass
class PromptCandidates:
    """All candidates for one prompt."""

    prompt: str
    candidates: list[Candidate]
    prompt_id: str | None = None


@dataclass(frozen=True)
class Pair:
    """A preference pair for DPO."""

    prompt: str
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    margin: float
    prompt_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PairStats:
    """What happened to every prompt and candidate (for logging; see the module docstring)."""

    prompts: int = 0
    pairs: int = 0
    ties: int = 0
    too_few_valid: int = 0
    all_failed: int = 0
    candidates: int = 0
    duplicates_merged: int = 0  # candidates whose text repeated an earlier candidate's of the same prompt
    excluded_candidates: int = 0
    mean_chosen_len: float | None = None  # characters
    mean_rejected_len: float | None = None
    mean_margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_prompt_candidates(item: PromptCandidates | Mapping[str, Any]) -> PromptCandidates:
    """Accept the dataclass or its JSON form ``{"prompt", "candidates": [{"text", "scores"}], "prompt_id"?}``."""
    if isinstance(item, PromptCandidates):
        return item
    cands = [c if isinstance(c, Candidate) else Candidate(text=c["text"], scores=list(c["scores"]))
             for c in item["candidates"]]
    return PromptCandidates(prompt=item["prompt"], candidates=cands, prompt_id=item.get("prompt_id"))


def merge_duplicates(candidates: Sequence[Candidate]) -> list[Candidate]:
    """One candidate per distinct text, in first-seen order, with the judge samples of its copies pooled."""
    merged: dict[str, Candidate] = {}
    for c in candidates:
        if c.text in merged:
            merged[c.text].scores.extend(c.scores)
        else:
            merged[c.text] = Candidate(c.text, list(c.scores))
    return list(merged.values())


def build_pairs(
    items: Iterable[PromptCandidates | Mapping[str, Any]],
    strategy: str = "max_min",
    rng: random.Random | int | None = None,
) -> tuple[list[Pair], PairStats]:
    """Build one preference pair per prompt where possible; return the pairs and the counts.

    ``rng`` (a ``random.Random`` or a seed; None means seed 0) is used only by ``max_random``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown pair strategy {strategy!r}: must be one of {', '.join(STRATEGIES)}")
    if not isinstance(rng, random.Random):
        rng = random.Random(0 if rng is None else rng)

    pairs: list[Pair] = []
    stats = PairStats()
    for raw in items:
        item = _as_prompt_candidates(raw)
        stats.prompts += 1
        stats.candidates += len(item.candidates)
        distinct = merge_duplicates(item.candidates)
        stats.duplicates_merged += len(item.candidates) - len(distinct)
        scored = [(c, c.score) for c in distinct]
        valid = [(c, s) for c, s in scored if is_valid_score(s)]
        stats.excluded_candidates += len(scored) - len(valid)
        if len(valid) < 2:
            stats.too_few_valid += 1
            if scored and not valid:
                stats.all_failed += 1
            continue
        # max() / min() return the first of equal elements: deterministic tie-breaking by input order.
        best, best_score = max(valid, key=lambda cs: cs[1])
        if strategy == "max_min":
            worst, worst_score = min(valid, key=lambda cs: cs[1])
            if worst_score == best_score:
                stats.ties += 1
                continue
        else:
            lower = [(c, s) for c, s in valid if s < best_score]
            if not lower:
                stats.ties += 1
                continue
            worst, worst_score = lower[rng.randrange(len(lower))]
        pairs.append(Pair(prompt=item.prompt, chosen=best.text, rejected=worst.text,
                          chosen_score=best_score, rejected_score=worst_score,
                          margin=best_score - worst_score, prompt_id=item.prompt_id))

    stats.pairs = len(pairs)
    stats.mean_chosen_len, stats.mean_rejected_len, stats.mean_margin = pair_means(pairs)
    return pairs, stats


def pair_means(pairs: Sequence[Pair]) -> tuple[float | None, float | None, float | None]:
    """Mean chosen length, rejected length (characters) and score margin; Nones when there are no pairs."""
    if not pairs:
        return None, None, None
    n = len(pairs)
    return (sum(len(p.chosen) for p in pairs) / n, sum(len(p.rejected) for p in pairs) / n,
            sum(p.margin for p in pairs) / n)


def score_histogram(scores: Sequence[float | None]) -> dict[str, int]:
    """Counts of each score value (``"4"``, ``"3.5"``) plus ``"none"`` for failed parses, sorted by value."""
    counts = Counter(f"{float(s):g}" for s in scores if is_valid_score(s))
    out = {k: counts[k] for k in sorted(counts, key=float)}
    out["none"] = sum(not is_valid_score(s) for s in scores)
    return out
