"""The pure core of LLM-as-a-Judge: prompt filling, score parsing, the consecutive-failure gate.

Everything here is pure (no I/O, no model, no tracker) so that it can be tested exhaustively.

**Failures are data.** A judgment that carries no valid declared score parses to ``None``; it is never
turned into a sentinel (-1, 0) that could leak into an average or be picked as the "rejected" answer.
``None`` is counted (:func:`parse_rate`), fed to :class:`ConsecutiveFailureGate`, and skipped by
:func:`aggregate`.

Only the *generated* judgment is ever parsed, never the decoded prompt + completion: the judge template
itself contains ``Score: <total points>`` and the judged response may contain anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

SCORE_MIN = 0.0
SCORE_MAX = 5.0

# Markup a model may wrap around the keyword or the number: **Score:** 4, __Score__: 4, `Score: 4`, ### ...
_MARKUP = r"[*_`#~\s]*"
# The separator between the keyword and the value: ':' (ASCII or full-width), '=', or a dash that
# stands alone ("Score - 4"); a dash glued to the number ("Score: -1") is the number's sign.
_SEP = r"(?:[:：=]|[-–—](?=\s))"
# An optional short parenthetical between keyword and separator: "Score (0-5): 4", "Score (out of 5): 4".
# (The pieces never start with the same character class twice in a row, so that a long run of spaces
# after "score" in a repetition loop cannot make the regex backtrack polynomially.)
_PAREN = r"(?:\([^()\n]{0,30}\)" + _MARKUP + ")?"
_NUMBER = r"-?\d+(?:[.,]\d+)?"
# "score" as a whole word; a double underscore counts as markdown (__Score__), a single one as part of
# an identifier (max_score).
_KEYWORD = r"(?:(?<!\w)|(?<=__))score(?:(?!\w)|(?=__))"

# One declaration: either the keyword form (``score`` as a whole word, so "Total score", "Final Score"
# and "**Score:**" all match while "scores", "scoring", "max_score" do not), or a bare "N/5" fraction.
# The value is validated in Python, so an out-of-range or ambiguous value still counts as the (last)
# declaration and makes the result None rather than letting an earlier declaration win.
_DECLARATION_RE = re.compile(
    r"""
    (?:
        """ + _KEYWORD + _MARKUP + _PAREN + _SEP + "(?P<gap>" + _MARKUP + r""")(?:[\[(<][^\S\n]*)?
        (?P<num>""" + _NUMBER + r""")(?![\d.,]?\d)
        (?:[^\S\n]*(?:-|–|to)[^\S\n]*(?P<num2>\d+(?:\.\d+)?)(?![\d.]?\d))?       # a range: "3-4"
        (?:[^\S\n]*(?:/|out[^\S\n]+of)[^\S\n]*(?P<den>\d+(?:\.\d+)?)(?![\d.]?\d))?  # "/5", "out of 5"
    |
        (?<![\w./-])(?P<fnum>\d+(?:\.\d+)?)[^\S\n]*/[^\S\n]*(?P<fden>5)
        (?![\d.]?\d)(?![^\S\n]*/)(?![^\S\n]+of\b)                                # not a date or "1/5 of"
    )
    """,
    re.IGNORECASE | re.VERBOSE,
)

# After "Score:" and a line break, "1. Relevance ..." starts a numbered list; it declares nothing.
_LIST_ITEM_AFTER_RE = re.compile(r"[.)][^\S\n]*[^\W\d_]")

# A declaration cut off by the token limit at the very end of the text: "Score:", "**Score:** ",
# "Score: -", "Score: 4/", "4 out of". Its value is unknown, so the result is None.
_TRUNCATED_TAIL_RE = re.compile(
    r"""
    (?:
        """ + _KEYWORD + _MARKUP + _PAREN + _SEP + r"""[*_`#~\s\[(<]*(?:-[^\S\n]*)?
    |
        (?<![\w.])\d+(?:[.,]\d+)?[^\S\n]*(?:/|out[^\S\n]+of)[^\S\n]*
    )
    \Z
    """,
    re.IGNORECASE | re.VERBOSE,
)

# Why a judgment did or did not yield a score (for logging failure shapes).
PARSE_OK = "ok"
PARSE_EMPTY = "empty"
PARSE_NO_DECLARATION = "no_declaration"
PARSE_OUT_OF_RANGE = "out_of_range"
PARSE_WRONG_SCALE = "wrong_scale"
PARSE_AMBIGUOUS = "ambiguous"
PARSE_TRUNCATED = "truncated"
PARSE_STATUSES = (PARSE_OK, PARSE_EMPTY, PARSE_NO_DECLARATION, PARSE_OUT_OF_RANGE, PARSE_WRONG_SCALE,
                  PARSE_AMBIGUOUS, PARSE_TRUNCATED)


def build_judge_prompt(template: str, prompt: str, response: str) -> str:
    """Fill the ``{prompt}`` and ``{response}`` slots of a judge template.

    Uses ``str.replace`` (never ``str.format``: templates may contain other braces). Slots are found in
    the *template* only: a literal ``{response}`` in the prompt text or ``{prompt}`` in the response
    text is left as written.
    """
    for slot in ("{prompt}", "{response}"):
        if slot not in template:
            raise ValueError(f"judge template has no {slot} slot")
    # Fill the pieces around each response slot separately, so that text inserted for one slot is
    # never scanned for the other (a response that quotes "{prompt}" stays as written).
    return response.join(part.replace("{prompt}", prompt) for part in template.split("{response}"))


@dataclass(frozen=True)
class ScoreParse:
    """The outcome of parsing one judgment: ``score`` (None unless ``status == "ok"``), why, and where."""

    score: float | None
    status: str
    span: tuple[int, int] | None = None  # character span of the deciding declaration, if any


def _is_list_item(match: re.Match[str], text: str) -> bool:
    gap = match.group("gap")
    return gap is not None and "\n" in gap and bool(_LIST_ITEM_AFTER_RE.match(text, match.end("num")))


def parse_judgment(text: str | None) -> ScoreParse:
    """Parse a judgment and say why it failed when it did. See :func:`parse_score` for the rules."""
    if text is None or not text.strip():
        return ScoreParse(None, PARSE_EMPTY)
    if _TRUNCATED_TAIL_RE.search(text):
        return ScoreParse(None, PARSE_TRUNCATED)
    declarations = [m for m in _DECLARATION_RE.finditer(text) if not _is_list_item(m, text)]
    if not declarations:
        return ScoreParse(None, PARSE_NO_DECLARATION)
    last = declarations[-1]  # only the last declaration counts
    span = last.span()
    if last.group("fnum") is not None:
        raw, den, num2 = last.group("fnum"), last.group("fden"), None
    else:
        raw, den, num2 = last.group("num"), last.group("den"), last.group("num2")
    if num2 is not None or "," in raw:
        return ScoreParse(None, PARSE_AMBIGUOUS, span)  # "Score: 3-4", "Score: 4,5"
    if den is not None and float(den) != SCORE_MAX:
        return ScoreParse(None, PARSE_WRONG_SCALE, span)  # "Score: 8/10": never rescaled
    value = float(raw)
    if not SCORE_MIN <= value <= SCORE_MAX:
        return ScoreParse(None, PARSE_OUT_OF_RANGE, span)
    return ScoreParse(value, PARSE_OK, span)


def parse_score(text: str | None) -> float | None:
    """Return the judge's final declared score on the 0-5 scale, or ``None``.

    Rules (the unit tests hold a corpus of real-looking outputs for each):

    * Only explicit declarations count, and the **last** one decides:
      ``Score: 4``, ``score: 4``, ``**Score:** 4``, ``Score: **4**``, ``Total score: 4``, ``Score - 4``,
      ``Score = 4``, ``Score：4`` (full-width colon), ``Score (0-5): 4``, ``Score: 4.5``, ``Score: 4.``,
      ``Score: 4/5``, ``Score: 4 out of 5``, ``Score: 4 points``, and a bare fraction ``4/5`` / ``4 / 5``.
      Prose such as "I give it a 4" or "Score: four" is *not* a declaration (None).
    * If the last declaration is invalid the result is None; an earlier valid one does **not** win:
      out of range (``Score: 10``, ``Score: 7``, ``Score: -1``, ``6/5``), another scale (``Score: 8/10``),
      ambiguous (``Score: 3-4``, ``Score: 4,5``). ``Score: 10`` is read as 10, never as 1.
    * The template's placeholder ``Score: <total points>`` carries no number and is not a declaration.
    * A declaration cut off at the very end of the text (``Score:``, ``Score: 4/``, ``4 out of``) makes
      the result None: the final score is unknown. A cut that still leaves a complete number
      (``Score: 4`` from ``Score: 4.5``) cannot be detected from text alone.
    * Fractions that are quantities or dates (``1/5 of``, ``3/5/2024``) are not declarations.

    Never returns a sentinel: callers must handle ``None`` (count it, feed it to the gate, skip it).
    """
    return parse_judgment(text).score


def is_valid_score(score: float | None) -> bool:
    """True for a real score (not None, not NaN)."""
    return score is not None and not (isinstance(score, float) and math.isnan(score))


def aggregate(scores: Iterable[float | None]) -> float | None:
    """Mean of the valid scores (None and NaN are skipped); None when none is valid."""
    valid = [float(s) for s in scores if is_valid_score(s)]
    return sum(valid) / len(valid) if valid else None


def parse_rate(scores: Sequence[float | None]) -> float | None:
    """Fraction of scores that are valid; None for an empty sequence."""
    return sum(is_valid_score(s) for s in scores) / len(scores) if scores else None


class ConsecutiveFailureGate:
    """Disqualify a judge whose outputs fail to parse more than ``max_consecutive`` times in a row.

    Feed every judgment in order with :meth:`update`. The gate trips on the failure that makes the
    current streak exceed ``max_consecutive`` (with the default 10: on the 11th failure in a row, the
    small-model study's "more than ten times in a row"); ``max_consecutive=0`` trips on the first
    failure. A success resets the current streak. Once tripped it stays tripped; counters keep counting.
    """

    def __init__(self, max_consecutive: int = 10) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 0:
            raise ValueError(f"max_consecutive must be an integer >= 0, got {max_consecutive!r}")
        self.max_consecutive = max_consecutive
        self.current_streak = 0
        self.longest_streak = 0
        self.failures = 0
        self.successes = 0
        self.total = 0
        self.tripped = False
        self.tripped_at: int | None = None  # 1-based index of the update that tripped the gate

    def update(self, parsed_ok: bool) -> bool:
        """Record one judgment (True: it parsed). Returns whether the gate is tripped."""
        self.total += 1
        if parsed_ok:
            self.successes += 1
            self.current_streak = 0
        else:
            self.failures += 1
            self.current_streak += 1
            self.longest_streak = max(self.longest_streak, self.current_streak)
            if not self.tripped and self.current_streak > self.max_consecutive:
                self.tripped = True
                self.tripped_at = self.total
        return self.tripped

    def update_scores(self, scores: Iterable[float | None]) -> bool:
        """Feed parsed scores in order (None/NaN = failure). Returns whether the gate is tripped."""
        for score in scores:
            self.update(is_valid_score(score))
        return self.tripped

    @property
    def parse_rate(self) -> float | None:
        return self.successes / self.total if self.total else None

    def to_dict(self) -> dict[str, Any]:
        """Counters for logging (flat, JSON-serialisable)."""
        return {
            "max_consecutive": self.max_consecutive,
            "tripped": self.tripped,
            "tripped_at": self.tripped_at,
            "current_streak": self.current_streak,
            "longest_streak": self.longest_streak,
            "failures": self.failures,
            "successes": self.successes,
            "total": self.total,
            "parse_rate": self.parse_rate,
        }

    def __repr__(self) -> str:
        return (f"ConsecutiveFailureGate(max_consecutive={self.max_consecutive}, tripped={self.tripped}, "
                f"streak={self.current_streak}, longest={self.longest_streak}, total={self.total})")


@dataclass
class JudgeRecord:
    """One judge sample for one candidate: the raw generated text and its parsed score (None: failed)."""

    prompt_id: str
    candidate_id: int
    sample: int
    text: str
    score: float | None

    @classmethod
    def from_text(cls, prompt_id: str, candidate_id: int, sample: int, text: str) -> JudgeRecord:
        return cls(prompt_id, candidate_id, sample, text, parse_score(text))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
