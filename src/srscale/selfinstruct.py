"""The pure parts of self-instruct prompt generation (Wang et al. 2023, as used by Yuan et al. 2024).

The paper makes new prompts with an 8-shot listing (6 seed prompts + 2 previously generated ones),
samples the model at T 0.6 / top-p 0.9, and keeps a new prompt only when its ROUGE-L F against every
known prompt is below 0.7. Here: the few-shot text (:func:`build_fewshot_prompt`), picking the shots
(:func:`sample_shots`), cutting one instruction out of a continuation (:func:`extract_instruction`) and
the filter (:class:`PromptFilter`). Generation itself lives with the model code.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence

from rouge_score import rouge_scorer, tokenizers

_WS_RE = re.compile(r"\s+")
# "Task 12:" (any case), the marker that separates listed tasks; also a bare "Task:" a model may invent.
_TASK_MARKER_RE = re.compile(r"\btask\s*\d*\s*[:：]", re.IGNORECASE)
_NON_WORD_RE = re.compile(r"[\W_]+")

FILTER_REASONS = ("too_short", "too_long", "duplicate", "rouge", "kept")


def _one_line(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def build_fewshot_prompt(seed_examples: Sequence[str], generated_examples: Sequence[str] = ()) -> str:
    """A plain-text task listing for a base or SFT model to continue.

    ``Task 1: <seed 1>\\n ... Task k: <generated>\\nTask k+1:`` with seed examples first, then generated
    ones. Each example is collapsed onto one line (runs of whitespace become one space), because one
    line is one task for :func:`extract_instruction`.
    """
    examples = [_one_line(e) for e in [*seed_examples, *generated_examples]]
    examples = [e for e in examples if e]
    if not examples:
        raise ValueError("build_fewshot_prompt needs at least one non-empty example")
    lines = [f"Task {i}: {e}" for i, e in enumerate(examples, start=1)]
    lines.append(f"Task {len(examples) + 1}:")
    return "\n".join(lines)


def extract_instruction(generated_text: str | None) -> str | None:
    """The new instruction in a continuation of :func:`build_fewshot_prompt`: the text up to the first
    newline or the next ``Task N:`` marker, stripped; None when that is empty.

    A leading ``Task N:`` on that line (a model that repeats the marker it was given) is skipped. A
    continuation that starts with a newline broke the listing's format and gives None.
    """
    if not generated_text:
        return None
    text = generated_text.lstrip(" \t")
    lead = _TASK_MARKER_RE.match(text)
    if lead:
        text = text[lead.end():].lstrip(" \t")
    line = text.split("\n", 1)[0]
    nxt = _TASK_MARKER_RE.search(line)
    if nxt:
        line = line[: nxt.start()]
    line = line.strip()
    return line or None


def sample_shots(
    pool: Sequence[str],
    generated: Sequence[str],
    n_seed: int = 6,
    n_generated: int = 2,
    rng: random.Random | int | None = None,
) -> tuple[list[str], list[str]]:
    """Pick the shots for one few-shot prompt: ``(seed_shots, generated_shots)``, without replacement.

    While fewer than ``n_generated`` generated prompts exist (the first round), the missing shots are
    filled with extra seed prompts, so the listing keeps ``n_seed + n_generated`` shots when the pool
    allows. ``rng`` is a ``random.Random`` or a seed (None means seed 0).
    """
    if n_seed < 0 or n_generated < 0:
        raise ValueError("n_seed and n_generated must be >= 0")
    if not isinstance(rng, random.Random):
        rng = random.Random(0 if rng is None else rng)
    gen = rng.sample(list(generated), min(n_generated, len(generated)))
    n_from_pool = min(len(pool), n_seed + (n_generated - len(gen)))
    seeds = rng.sample(list(pool), n_from_pool)
    return seeds, gen


def normalize_prompt(text: str) -> str:
    """Case-folded, punctuation and spacing collapsed (any script): the key for exact duplicates."""
    return _NON_WORD_RE.sub(" ", text.casefold()).strip()


class PromptFilter:
    """Decide whether a generated prompt is new enough to keep.

    :meth:`consider` checks, in order: length (``too_short`` below ``min_chars``, ``too_long`` above
    ``max_chars``, after stripping), ``duplicate`` (same :func:`normalize_prompt` key as a pool or kept
    prompt), ``rouge`` (ROUGE-L F >= ``threshold`` against any pool or kept prompt, computed by
    ``rouge_score``), else ``kept``. Kept prompts join the comparison pool. ``counts`` tallies reasons.
    """

    def __init__(self, pool: Sequence[str], threshold: float = 0.7, min_chars: int = 8,
                 max_chars: int = 400) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if min_chars > max_chars:
            raise ValueError(f"min_chars ({min_chars}) must be <= max_chars ({max_chars})")
        self.threshold = threshold
        self.min_chars = min_chars
        self.max_chars = max_chars
        self.kept: list[str] = []
        self.counts: dict[str, int] = dict.fromkeys(FILTER_REASONS, 0)
        self._scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)  # the scorer's own tokenization
        self._texts: list[str] = []
        self._bags: list[tuple[Counter[str], int]] = []
        self._keys: set[str] = set()
        for text in pool:
            self._add(text)

    def _add(self, text: str) -> None:
        tokens = self._tokenizer.tokenize(text)
        self._texts.append(text)
        self._bags.append((Counter(tokens), len(tokens)))
        self._keys.add(normalize_prompt(text))

    def max_rouge(self, candidate: str) -> tuple[float, str | None]:
        """Highest ROUGE-L F of ``candidate`` against the pool and kept prompts, and that prompt.

        The exact score (``RougeScorer.score``) is computed only where a cheap upper bound could reach
        the threshold: the LCS is at most the bag-of-words overlap, so F <= 2 * overlap / (len_a + len_b).
        Returns ``(0.0, None)`` when no known prompt comes near the threshold.
        """
        tokens = self._tokenizer.tokenize(candidate)
        bag, n = Counter(tokens), len(tokens)
        best, best_text = 0.0, None
        if n == 0:
            return best, best_text
        for text, (other_bag, m) in zip(self._texts, self._bags, strict=True):
            if m == 0:
                continue
            overlap = sum((bag & other_bag).values())
            if 2 * overlap / (n + m) < self.threshold - 1e-9:  # margin for float rounding
                continue
            f = self._scorer.score(text, candidate)["rougeL"].fmeasure
            if f > best:
                best, best_text = f, text
        return best, best_text

    def consider(self, candidate: str | None) -> tuple[bool, str]:
        """Keep or reject one generated prompt; returns ``(kept, reason)`` and updates ``counts``."""
        text = (candidate or "").strip()
        if len(text) < self.min_chars:
            reason = "too_short"
        elif len(text) > self.max_chars:
            reason = "too_long"
        elif normalize_prompt(text) in self._keys:
            reason = "duplicate"
        elif self.max_rouge(text)[0] >= self.threshold:
            reason = "rouge"
        else:
            reason = "kept"
            self.kept.append(text)
            self._add(text)
        self.counts[reason] += 1
        return reason == "kept", reason
