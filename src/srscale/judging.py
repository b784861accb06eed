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
from fractions import Fraction
from typing import Any

SCORE_MIN = 0.0
SCORE_MAX = 5.0

# ------------------------------------------------------------------------ score parsing: the pieces
# Every pattern below is linear: each quantifier is bounded or runs over a character class that the
# next piece cannot start with, and context is read in windows of at most _WINDOW characters.

# Unicode vulgar fractions, read exactly ("4½" is 4.5, "3⅓" is 10/3).
_VULGAR = {
    "¼": Fraction(1, 4), "½": Fraction(1, 2), "¾": Fraction(3, 4), "⅐": Fraction(1, 7), "⅑": Fraction(1, 9),
    "⅒": Fraction(1, 10), "⅓": Fraction(1, 3), "⅔": Fraction(2, 3), "⅕": Fraction(1, 5), "⅖": Fraction(2, 5),
    "⅗": Fraction(3, 5), "⅘": Fraction(4, 5), "⅙": Fraction(1, 6), "⅚": Fraction(5, 6), "⅛": Fraction(1, 8),
    "⅜": Fraction(3, 8), "⅝": Fraction(5, 8), "⅞": Fraction(7, 8), "↉": Fraction(0, 3),
}
_VF = "[" + "".join(_VULGAR) + "]"

# Markup a model may wrap around the keyword or the number: **Score:** 4, __Score__: 4, `Score: 4`, ### ...
_MARKUP = r"[*_`#~\s]*"
# The separator between the keyword and the value: ':' (ASCII or full-width), '=', or a dash that
# stands alone ("Score - 4"); a dash glued to the number ("Score: -1") is the number's sign.
_SEP = r"(?:[:：=]|[-–—](?=\s))"
# An optional short parenthetical between keyword and separator: "Score (0-5): 4", "Score (out of 5): 4".
# (The pieces never start with the same character class twice in a row, so that a long run of spaces
# after "score" in a repetition loop cannot make the regex backtrack polynomially.)
_PAREN = r"(?:\([^()\n]{0,30}\)" + _MARKUP + ")?"
# "score" as a whole word; a double underscore counts as markdown (__Score__), a single one as part of
# an identifier (max_score).
_KEYWORD = r"(?:(?<!\w)|(?<=__))score(?:(?!\w)|(?=__))"

# A candidate is either a keyword head ("Score:", "**Total score** (0-5) =", ...), whose value is read
# by _read_keyword, or a bare "N/5" fraction (not a date "3/5/2024", not a quantity "1/5 of", not
# "4/5ths", not arithmetic "= 412 / 5 ="), or a bare fraction cut at the very end ("4/", "4 out of").
_CANDIDATE_RE = re.compile(
    r"(?P<head>" + _KEYWORD + _MARKUP + _PAREN + _SEP + r")"
    r"|(?<![\w./-])(?<!=)(?<!= )(?P<fnum>\d+(?:\.\d+|" + _VF + ")?|" + _VF + r")[^\S\n]*"
    r"(?:/[^\S\n]*(?:(?P<fden>5)(?![\d.]?\d)(?![^\S\n]*[/=])(?![^\S\n]+of\b)(?![^\W\d_])|(?P<fcut>)(?=\s*\Z))"
    r"|out[^\S\n]+of(?P<fcut2>)(?=\s*\Z))",
    re.IGNORECASE,
)

# What follows a keyword head: markup, an optional opening bracket or quote, a sign, then the number
# (an integer, a decimal with '.' or ',', ".5", an integer with a vulgar fraction "4½" / "4 ½", or "½").
_VALUE_RE = re.compile(
    r"(?P<gap>[*_`#~\s]*)(?:[\[(<{\"'“‘«][^\S\n]*[*_`]*)?(?P<sign>[-−+])?"
    r"(?:(?P<int>\d+)(?:(?P<frac>[.,]\d+)|[^\S\n]?(?P<vf>" + _VF + r"))?"
    r"|(?P<lead>\.\d+)|(?P<vfonly>" + _VF + "))?"
)
# A head followed by nothing but markup, brackets or quotes up to the end: "Score:", "**Score:** [".
_BLANK_TAIL_RE = re.compile(r"[*_`#~\s\[(<{\"'“‘«]*\Z")
# Closing markup only, up to the end: what may follow a value that the token limit cut.
_AT_END_RE = re.compile(r"[\s*_`\"'”’)\]>}]*\Z")
# After "Score:" and a line break, "1. Relevance ..." starts a numbered list; it declares nothing.
_LIST_ITEM_AFTER_RE = re.compile(r"[.)][^\S\n]*[^\W\d_]")
# Glued to the number, these make it something other than a plain decimal: "1e1", "0x4", "0b11",
# "4th", "4.5.1", "4:30", "4+" (letters, digits, another '.'/','/':' part). "4pts" is still 4 points.
_NUMBER_JUNK_RE = re.compile(r"[.,:]\d|(?!(?:pts?|points?)\b)[^\W_]|[+^°]", re.IGNORECASE)
_PERCENT_RE = re.compile(r"[^\S\n]*[%‰]")
# A date glued to the number: "4/5/2024", "4-5-2024".
_DATE_RE = re.compile(r"[/\-–]\d+[/\-–]\d")
# The scale after the number: "/5", "/ 5", "out of 5", "of 5", "(out of 5)", "out of five"; the
# denominator may be missing when the token limit cut it ("4/", "4 out of").
_DENOMINATOR_RE = re.compile(
    r"[^\S\n]*(?P<paren>\([^\S\n]*)?(?P<word>/|out(?:[^\S\n]+of)?\b|of\b)[^\S\n]*"
    r"(?:(?P<den>\d+(?:[.,]\d+)?)|(?P<denword>five|ten)\b)?(?:[^\S\n]*\))?",
    re.IGNORECASE,
)
_DENOMINATOR_JUNK_RE = re.compile(r"[.,:]\d|[^\W_]|[%+^°]|[^\S\n]*/|[\-–]\d")
# A second number on the same line: a range "3-4", "3 to 4", "3 or 4", a list "4, 5", or "4 5".
_SECOND_NUMBER_RE = re.compile(
    r"(?:[^\S\n]*(?:[-–—]|\bto\b|\bor\b|\band\b|[,;&])[^\S\n]*|[^\S\n]+)(?:\d|" + _VF + ")", re.IGNORECASE)
# A range cut at the very end: "Score: 4 to", "Score: 3-".
_RANGE_CUT_RE = re.compile(r"[^\S\n]*(?:[-–—]|\bto\b|\bor\b)[\s*_`\"'”’)\]>}]*\Z", re.IGNORECASE)

# A hallucinated next turn: a line that opens another party's turn ("User:", "Human:", "### User",
# "**Question:**", "Instruction:") or repeats the judge template's opening, or a chat-template token
# that opens a user/system turn or ends the judge's own.
_TURN_RE = re.compile(
    r"""
    ^[^\S\n]*(?:(?:\#{1,6}|>|\*\*|__)[^\S\n]*)?[\[<]?(?:user|human|question|instruction)[\]>]?(?:\*\*|__)?
        [^\S\n]*[:：]
    | ^[^\S\n]*\#{1,6}[^\S\n]*(?:user|human|question|instruction)[^\S\n]*$
    | ^[^\S\n]*(?:review[ ]the[ ]user['’]s[ ]question[ ]and[ ]the[ ]corresponding[ ]response
                 |after[ ]examining[ ]the[ ]user['’]s[ ]instruction[ ]and[ ]the[ ]response)
    | <\|(?:user|system|im_end|eot_id|endoftext|end_of_text|end)\|>
    | <\|(?:im_start|start_header_id)\|>[^\S\n]*(?:user|system)
    | <start_of_turn>[^\S\n]*user | <end_of_turn> | </s> | \[INST\]
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)

# ---- context: when a well-formed candidate is a mention, not a declaration
_WINDOW = 100  # characters read before (and after) a candidate; bounded, so parsing stays linear
_SENTENCE_END_RE = re.compile(r"[.!?](?=\s)|[\n;]")
_CLAUSE_END_RE = re.compile(
    r"[,:;()\[\]\n]|\s[-–—]\s|\b(?:but|and|so|yet|although|though|however|whereas|while|overall|therefore"
    r"|thus|hence|still|because|since)\b",
    re.IGNORECASE,
)
_NEGATION_WORDS = 6  # a negation counts when it is among the last words before the candidate
_NEGATION_RE = re.compile(r"\b(?:not|never|no(?!\s+(?:doubt|question)\b)|nor|neither|cannot)\b|n['’]t\b",
                          re.IGNORECASE)
# "would have been", "could've", "I'd have" (but "would have to say" is an obligation, not a counterfactual).
_COUNTERFACTUAL_RE = re.compile(
    r"(?:\b(?:would|could|might|should|must)(?:n['’]t|\s+not)?\s+have|(?:would|could|might|should)['’]ve"
    r"|['’]d\s+have)\b(?!\s+to\b)",
    re.IGNORECASE,
)
# Right before the candidate: "rather than 4/5", "better than a 3/5", "instead of 4/5", "up from 2/5".
_COMPARATIVE_RE = re.compile(
    r"\b(?:than|instead\s+of|from)(?:\s+(?:a|an|the|perfect|full|solid))?[\s\"'“‘`*_(\[<]*\Z",
    re.IGNORECASE,
)
# In the candidate's own clause: "if it cited sources it gets 5/5" is a condition ("even if" concedes).
_CONDITIONAL_RE = re.compile(
    r"(?<!\beven )\b(?:if|unless|whether|suppose|supposing|hypothetically|imagine)\b", re.IGNORECASE)
# A modal about the response ("it would be", "this could reach"; not the judge's own "I would rate").
_HYPOTHETICAL_MODAL_RE = re.compile(
    r"(?<!\bi )(?<!\bwe )\b(?:would|could|might)(?:\s+\w+)?\s+"
    r"(?:be|get|earn|deserve|receive|merit|warrant|reach|score|achieve)\b",
    re.IGNORECASE,
)
# ... which is hypothetical when a condition stands elsewhere in the sentence ("if I had to pick" does not).
_CONDITION_BEFORE_RE = re.compile(
    r"(?<!\beven )\bif\b(?!\s+(?:i|we)\s+(?:had|have|were|was|must|need)\s+to\b)|\bunless\b|\bonce\b"
    r"|\b(?:had|were)\s+it\b",
    re.IGNORECASE,
)
_CONDITION_AFTER_RE = re.compile(r"\b(?:if|unless|once)\b|\b(?:had|were)\s+(?:it|they|the)\b", re.IGNORECASE)
_AFTER_STOP_RE = re.compile(r"[!?\n;]|\.(?!\d)")
_QUESTION_START_RE = re.compile(
    r"\s*[*_\"'“‘(]*(?:is|isn['’]t|are|was|does|doesn['’]t|do|did|would|could|should|can|will|has|have|what"
    r"|which|how|why)\b",
    re.IGNORECASE,
)
# Format examples: a strong cue marks what follows as an example, quoted or not ("e.g. Score: 2");
# a weak one only when the declaration is quoted ('the format "Score: 3"').
_EXAMPLE_WORDS = 4  # at most this many words between the cue and the candidate
_STRONG_EXAMPLE_RE = re.compile(r"\bfor\s+(?:example|instance)\b|\be\.?g\b\.?|\bsuch\s+as\b", re.IGNORECASE)
_WEAK_EXAMPLE_RE = re.compile(
    r"\b(?:examples?|format(?:ted)?|template|placeholder|syntax|pattern|like|in\s+the\s+form)\b",
    re.IGNORECASE,
)
_EXAMPLE_BREAK_RE = re.compile(r"[.!?;](?=\s)|\b(?:so|therefore|thus|hence|overall)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"\w+")
_QUOTED_RE = re.compile(r"[\"'“‘`][*_]*\Z")

# Why a judgment did or did not yield a score (for logging failure shapes).
PARSE_OK = "ok"
PARSE_EMPTY = "empty"
PARSE_NO_DECLARATION = "no_declaration"
PARSE_OUT_OF_RANGE = "out_of_range"
PARSE_WRONG_SCALE = "wrong_scale"
PARSE_AMBIGUOUS = "ambiguous"
PARSE_TRUNCATED = "truncated"
PARSE_MALFORMED = "malformed"  # a number that is not a plain decimal: "1e1", "0x4", "4th", "4/5/2024"
PARSE_HALLUCINATED_TURN = "hallucinated_turn"  # the text ran into a new turn before any declaration
PARSE_STATUSES = (PARSE_OK, PARSE_EMPTY, PARSE_NO_DECLARATION, PARSE_OUT_OF_RANGE, PARSE_WRONG_SCALE,
                  PARSE_AMBIGUOUS, PARSE_TRUNCATED, PARSE_MALFORMED, PARSE_HALLUCINATED_TURN)


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
    turn_cut: int | None = None  # where a hallucinated next turn starts; the text from there is ignored


@dataclass(frozen=True)
class _Candidate:
    """A declaration's shape: its span and the status (and value, when ok) it gives if it decides."""

    start: int
    end: int
    status: str
    value: float | None = None
    dangling: bool = False  # a keyword with nothing after it but markup up to the end ("Score:"): skipped


def _number(v: re.Match[str]) -> tuple[float, str]:
    """The number matched by _VALUE_RE, and the status its own shape gives."""
    integer, frac = v.group("int"), v.group("frac")
    if integer is not None:
        vf = v.group("vf")
        if frac is not None:
            value = float(integer + "." + frac[1:])
        else:
            value = float(int(integer) + (_VULGAR[vf] if vf else 0))
    elif v.group("lead") is not None:
        value = float("0" + v.group("lead"))
    else:
        value = float(_VULGAR[v.group("vfonly")])
    sign = v.group("sign")
    if sign == "+":
        return value, PARSE_MALFORMED  # "Score: +4"
    if sign:
        return -value, PARSE_OUT_OF_RANGE  # "Score: -1" (and "-0": a sign says it is not a plain score)
    if frac is not None and frac.startswith(","):
        return value, PARSE_AMBIGUOUS  # "Score: 4,5": a decimal comma or a list
    return value, PARSE_OK if SCORE_MIN <= value <= SCORE_MAX else PARSE_OUT_OF_RANGE


def _read_tail(text: str, pos: int) -> tuple[str | None, int]:
    """Read what follows a keyword's number at ``pos``: (the status it forces, or None; where it ends)."""
    if _NUMBER_JUNK_RE.match(text, pos) or _DATE_RE.match(text, pos):
        return PARSE_MALFORMED, pos  # "1e1", "0x4", "4th", "4.5.1", "4/5/2024"
    if m := _PERCENT_RE.match(text, pos):
        return PARSE_WRONG_SCALE, m.end()  # "Score: 80%": another scale, never rescaled
    forced = None
    d = _DENOMINATOR_RE.match(text, pos)
    if d is not None:
        den, word = d.group("den"), d.group("denword")
        if den is None and word is None:
            if _AT_END_RE.match(text, d.end()):
                return None, d.end()  # "Score: 4/", "Score: 4 out of": the number itself is complete
            if d.group("word") == "/":
                return PARSE_MALFORMED, d.end()  # "Score: 4/ good"
        else:
            if _DENOMINATOR_JUNK_RE.match(text, d.end("den") if den is not None else d.end("denword")):
                return PARSE_MALFORMED, d.end()  # "Score: 4/5/2024", "Score: 4/5th", "Score: 4/5.0.1"
            if den == "1" and _AT_END_RE.match(text, d.end()):
                return PARSE_AMBIGUOUS, d.end()  # "Score: 4/1" at the very end: maybe "4/10" cut off
            if den is not None:
                scale = float(den.replace(",", "."))
            else:
                scale = 5.0 if word.lower() == "five" else 10.0
            if scale != SCORE_MAX:
                forced = PARSE_WRONG_SCALE  # "Score: 8/10", "4 out of ten": never rescaled
            pos = d.end()
    if _RANGE_CUT_RE.match(text, pos):
        return PARSE_TRUNCATED, len(text)  # "Score: 4 to", "Score: 3-": a range cut off
    if _SECOND_NUMBER_RE.match(text, pos):
        return forced or PARSE_AMBIGUOUS, pos  # "3-4", "3 to 4", "3 or 4", "4, 5", "4 1/2"
    return forced, pos


def _read_keyword(text: str, head: re.Match[str]) -> tuple[_Candidate | None, int]:
    """Read the value after a keyword head: (a candidate or None if it declares nothing; where it ends)."""
    v = _VALUE_RE.match(text, head.end())
    if v.group("int") is None and v.group("lead") is None and v.group("vfonly") is None:
        if not _BLANK_TAIL_RE.match(text, v.end()):
            return None, v.end()  # "Score: four", "Score: <total points>"
        if v.group("sign"):
            return _Candidate(head.start(), v.end(), PARSE_TRUNCATED), v.end()  # "Score: -" cut off
        return _Candidate(head.start(), v.end(), PARSE_TRUNCATED, dangling=True), v.end()
    if "\n" in v.group("gap") and _LIST_ITEM_AFTER_RE.match(text, v.end()):
        return None, v.end()  # "Score:\n1. Relevance: ..."
    value, status = _number(v)
    forced, end = _read_tail(text, v.end())
    if forced is not None and (forced != PARSE_AMBIGUOUS or status == PARSE_OK):
        status = forced  # a malformed, cut or foreign-scale shape says more than the value
    return _Candidate(head.start(), end, status, value if status == PARSE_OK else None), end


def _read_bare(m: re.Match[str]) -> _Candidate:
    """A bare fraction: "4/5" gives 4; "6/5" is out of range; "4/" or "4 out of" at the end is cut off."""
    if m.group("fden") is None:
        return _Candidate(m.start(), m.end(), PARSE_TRUNCATED)
    raw = m.group("fnum")
    value = float(int(raw[:-1] or 0) + _VULGAR[raw[-1]]) if raw[-1] in _VULGAR else float(raw)
    ok = SCORE_MIN <= value <= SCORE_MAX
    return _Candidate(m.start(), m.end(), PARSE_OK if ok else PARSE_OUT_OF_RANGE, value if ok else None)


def _candidates(text: str) -> list[_Candidate]:
    """Every declaration shape, in order."""
    found: list[_Candidate] = []
    consumed = 0  # a bare fraction inside a keyword's value ("Score: 4/5") is that value, not another
    for m in _CANDIDATE_RE.finditer(text):
        if m.start() < consumed:
            continue
        if m.group("head") is None:
            found.append(_read_bare(m))
            continue
        cand, consumed = _read_keyword(text, m)
        if cand is not None:
            found.append(cand)
    return found


def _last(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = None
    for last in pattern.finditer(text):  # noqa: B007 - the loop keeps the last match
        pass
    return last


def _is_example(line: str) -> bool:
    """``line`` is the text just before a candidate on its line: does it mark the candidate as an example?"""
    for cue_re, needs_quote in ((_STRONG_EXAMPLE_RE, False), (_WEAK_EXAMPLE_RE, True)):
        cue = _last(cue_re, line)
        if cue is None:
            continue
        between = line[cue.end():]
        if len(_WORD_RE.findall(between)) > _EXAMPLE_WORDS or _EXAMPLE_BREAK_RE.search(between):
            continue
        if not needs_quote or _QUOTED_RE.search(between):
            return True
    return False


def _is_mention(text: str, cand: _Candidate) -> bool:
    """Whether the candidate is mentioned rather than declared: negated, counterfactual, conditional,
    compared against, asked about, or quoted as a format example. Reads bounded windows only."""
    before = text[max(0, cand.start - _WINDOW):cand.start]
    line = before[before.rfind("\n") + 1:]
    if _is_example(line):
        return True
    end = _last(_SENTENCE_END_RE, before)
    sentence = before if end is None else before[end.end():]
    end = _last(_CLAUSE_END_RE, sentence)
    clause = sentence if end is None else sentence[end.end():]
    if _NEGATION_RE.search(" ".join(clause.split()[-_NEGATION_WORDS:])):
        return True  # "does not deserve a 5/5", "I would not give it Score: 5", "not a 5/5"
    if _COUNTERFACTUAL_RE.search(clause) or _COMPARATIVE_RE.search(clause) or _CONDITIONAL_RE.search(clause):
        return True  # "would have been Score: 5", "rather than 4/5", "if it cited sources, 5/5"
    after = text[cand.end:cand.end + _WINDOW]
    stop = _AFTER_STOP_RE.search(after)
    rest = after if stop is None else after[:stop.start()]
    if _HYPOTHETICAL_MODAL_RE.search(clause) and (_CONDITION_BEFORE_RE.search(sentence)
                                                  or _CONDITION_AFTER_RE.search(rest)):
        return True  # "it would be a 5/5 if it had examples", "had it cited sources, it would get 5/5"
    return stop is not None and stop.group() == "?" and bool(_QUESTION_START_RE.match(sentence))


def parse_judgment(text: str | None) -> ScoreParse:
    """Parse a judgment and say why it failed when it did. See :func:`parse_score` for the rules."""
    if text is None or not text.strip():
        return ScoreParse(None, PARSE_EMPTY)
    turn = _TURN_RE.search(text)
    cut = None if turn is None else turn.start()
    body = text if cut is None else text[:cut]
    found = _candidates(body)
    for cand in reversed(found):  # the last declaration decides; a dangling keyword and mentions do not
        if not cand.dangling and not _is_mention(body, cand):
            return ScoreParse(cand.value, cand.status, (cand.start, cand.end), cut)
    if cut is not None:
        return ScoreParse(None, PARSE_HALLUCINATED_TURN, None, cut)
    return ScoreParse(None, PARSE_TRUNCATED if found and found[-1].dangling else PARSE_NO_DECLARATION)


def parse_score(text: str | None) -> float | None:
    """Return the judge's final declared score on the 0-5 scale, or ``None``.

    Rules (the unit tests hold a corpus of real-looking outputs for each shape, with its status):

    * **Declarations.** ``score`` as a whole word, a separator, then a number: ``Score: 4``,
      ``score: 4``, ``**Score:** 4``, ``Score: **4**``, ``Total score: 4``, ``Score - 4``, ``Score = 4``,
      ``Score：4`` (full-width colon), ``Score (0-5): 4``, ``Score: 4.5``, ``Score: 4.``, ``Score: .5``,
      ``Score: [3]``, ``Score: "4"``, ``Score: 4/5``, ``Score: 4 out of 5``, ``Score: 4 of 5``,
      ``Score: 4 (out of 5)``, ``Score: 4 out of five``, ``Score: 4 points``, ``Score: 4pts``; and a bare
      fraction ``4/5`` / ``4 / 5``. Unicode vulgar fractions are read exactly (``Score: 4½`` and
      ``Score: 4 ½`` are 4.5, ``4½/5`` too). Prose such as "I give it a 4", "a score of 4" or
      "Score: four" is *not* a declaration.
    * **The last declaration decides.** If it is invalid the result is None; an earlier valid one does
      **not** win: out of range (``Score: 10``, ``Score: 7``, ``Score: -1``, ``Score: -0``, ``6/5``);
      another scale, never rescaled (``Score: 8/10``, ``Score: 4 (out of 10)``, ``Score: 4 out of ten``,
      ``Score: 80%``, ``Score: 4%``); ambiguous (``Score: 3-4``, ``Score: 3 to 4``, ``Score: 3 or 4``,
      ``Score: 4,5``, ``Score: 4, 5``, ``Score: 4 1/2``). ``Score: 10`` is read as 10, never as 1.
    * **Only plain decimals.** A number with something glued to it is not clearly a 0-5 score, so the
      declaration is malformed (None): ``1e1``, ``4e0``, ``0x4``, ``0b11``, ``4th``, ``4.5.1``, ``4:30``,
      ``+4``, dates ``4/5/2024`` and ``4-5-2024``, ``4/5th``, and ``4/ good`` (a slash with no scale).
    * **Truncation at the very end** (closing markup aside). A cut scale leaves a complete number,
      which counts: ``Score: 4/``, ``Score: 4 out of``, ``Score: 4 out`` give 4. A cut value or range does
      not: ``Score: -``, ``Score: 4 to``, ``Score: 3-``, ``Score: 3 or`` give None (``truncated``), and so
      does a bare fraction cut off (``4/``, ``4 out of``: its scale is what made it a declaration);
      ``Score: 4/1`` at the end is ambiguous (maybe "4/10"). A final dangling keyword with no value
      (``Score:``, ``**Score:** [``) is skipped, so an earlier declaration decides (``truncated`` when
      there is none). A cut that leaves a complete number (``Score: 4`` from ``Score: 4.5``) cannot be
      detected from text alone.
    * **Mentions are not declarations**; they are skipped, so an earlier declaration can decide. The
      context read is bounded (``_WINDOW`` characters each side) and stays in the candidate's sentence
      (ended by ``. ! ?`` before a space, ``;``, a line break) and clause (also ended by ``, : ( ) [ ]``,
      a spaced dash, and "but", "and", "so", "yet", "although", "though", "however", "while",
      "whereas", "overall", "therefore", "thus", "hence", "still", "because", "since"):

      - negated: "not", "never", "no" (not "no doubt"), "nor", "neither", "cannot", "n't" among the last
        six words of the clause ("it does not deserve a 5/5", "not a 5/5", "I would not give it
        Score: 5");
      - counterfactual: "would/could/might/should/must have", "would've", "'d have" in the clause
        ("would have been Score: 5 if ..."; "would have to say" is an obligation, not one);
      - compared: "than", "instead of", "from" right before it ("rather than 4/5", "up from 2/5");
      - conditional: "if", "unless", "whether", "suppose", "imagine", "hypothetically" in the clause
        ("even if" concedes); or a modal about the response ("it would be", "this could reach"; not the
        judge's own "I would rate it 3/5") with "if", "unless", "once", "had it", "were it" elsewhere
        in the sentence ("... a 5/5 if it had examples", "Had it cited sources, it would get 5/5";
        "if I had to pick" is no condition);
      - asked: a sentence that opens with a question word ("Is", "Does", "Would", "What", ...) and
        reaches "?" after the candidate before any other stop ("Is this a 5/5?");
      - a format example: "for example", "for instance", "e.g.", "such as" at most four words before it
        on its line, with no sentence end or "so"/"therefore"/... between (``e.g. Score: 2``); or
        "example", "format", "template", "placeholder", "syntax", "pattern", "like", "in the form" so
        close with the declaration quoted (``the format "Score: 3"``, ``like `Score: 2```). A plain
        quoted ``"Score: 4"`` is a declaration.

      Text after a mention is read afresh: "It does not deserve a 5/5. Score: 4" gives 4.
    * **Hallucinated next turns.** Only the text before the first new turn is read: a line that opens
      another party's turn (``User:``, ``Human:``, ``Question:``, ``Instruction:``, with markup such as
      ``### User``, ``**User:**``, ``[User]:``), a line that repeats the judge template's opening ("Review
      the user's question and the corresponding response", "After examining the user's instruction and
      the response"), or a chat token that opens a user/system turn or ends the judge's (``<|user|>``,
      ``<|im_start|>user``, ``<|im_end|>``, ``<|eot_id|>``, ``</s>``, ``[INST]`` ...). A declaration after
      it never decides; with none before it the status is ``hallucinated_turn``. The end of that text
      is the "very end" for truncation.
    * Not declarations either: the template's placeholder ``Score: <total points>``; a list after a
      line break (``Score:\\n1. Relevance ...``); bare fractions that are quantities (``1/5 of``,
      ``4/5ths``), dates (``3/5/2024``) or arithmetic (``= 412 / 5 =``).

    Linear in the length of the text. Never returns a sentinel: callers must handle ``None`` (count it,
    feed it to the gate, skip it).
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
