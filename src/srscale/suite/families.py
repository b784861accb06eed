"""Verifiable instruction families: seeded task generators, prompt readers, reference solvers and graders.

Each family generates short tasks (``Task(family, prompt, answer)``), reads any prompt of its kind back
into a *spec* (also a rephrasing a model wrote: "What is 3 + 4?", "add 3 and 4", "Compute 3 plus 4."),
solves a spec, and grades a response on the 0-5 scale below. ``corrupt`` writes a response of a chosen
grade, which is how judge-training data of known quality is made.

Grade scale (aligned with the additive 5-point judge rubric of Yuan et al. 2024). A response's
*candidates* are the answer-like spans of the family's answer type (integers and number words for the
numeric families, integer lists for sort, near-anagrams of the word for reverse, the word in any case for
case, runs of the word for repeat). *Echoes* are candidates that also occur in the prompt (the operands
of a sum, the list to sort); an echo never counts against a response.

- **5** exactly the correct answer and nothing else (surrounding punctuation, quotes or spaces aside).
- **4** the correct answer with a few extra words (at most 10 words besides the candidates), no
  competing answer and no repetition: "The answer is 7.", "3 + 4 = 7".
- **3** the correct answer is there but buried: a long reply (more than 10 other words), the answer
  stated three or more times or a word repeated three or more times, or hedged beside a different
  answer ("8, or maybe 7").
- **2** relevant but wrong: an answer of the right type, none of them correct.
- **1** mentions the task (its topic words or the prompt's content word) without answering.
- **0** empty, or unrelated to the task.

``grade`` is a pure function of ``(prompt, response)``; it returns None when no family reads the prompt
(never a sentinel score). ``is_correct`` is ``grade >= 4``.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from srscale.suite import text as tx
from srscale.suite.text import Cand

SCALE = (0, 1, 2, 3, 4, 5)
CORRECT_MIN = 4  # grade at or above which an answer counts as correct
MAX_EXTRA_WORDS = 10  # words besides the candidates that a grade-4 answer may carry


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str
    answer: str


# ------------------------------------------------------------------------------------ shared phrasing
_LEVEL4 = ("The answer is {a}.", "{a} is the answer.", "Sure! The answer is {a}.", "Answer: {a}",
           "I think it is {a}.", "Here it is: {a}")
_LEVEL3_LONG = (
    "Let me think about this carefully before I answer. The answer is {a}. I hope this helps you.",
    "Good question! I worked through it slowly and checked my work, and I got {a} as the result.",
    "Here is my reasoning: I read the question, did the work step by step, and found {a}. "
    "Let me know if you need more help.",
)
_LEVEL3_REPEAT = ("{a}. {a}. {a}.", "The answer is {a}. The answer is {a}. The answer is {a}.")
_LEVEL3_HEDGE = ("It could be {w}, or maybe {a}.", "Either {w} or {a}.", "{w}? No wait, maybe {a}.")
_LEVEL2 = ("{w}", "The answer is {w}.", "{w} is the answer.", "I think it is {w}.")


class Family:
    """One kind of task. Subclasses define sampling, rendering, reading, solving and the answer type."""

    name: str = ""
    topic: frozenset[str] = frozenset()  # words that make a response relevant to this family

    # -- to define in subclasses
    def sample_spec(self, rng: random.Random) -> tuple:
        raise NotImplementedError

    def render(self, spec: tuple, rng: random.Random) -> str:
        raise NotImplementedError

    def read(self, prompt: str) -> tuple | None:
        """The spec of a prompt of this family, or None if it cannot be read."""
        raise NotImplementedError

    def solve(self, spec: tuple) -> str:
        """The reference answer, in canonical form (equal to its own candidate value)."""
        raise NotImplementedError

    def candidates(self, spec: tuple, text: str) -> list[Cand]:
        raise NotImplementedError

    def wrong_answers(self, spec: tuple, rng: random.Random) -> list[str]:
        raise NotImplementedError

    def mentions(self, spec: tuple) -> list[str]:
        """Sentences that talk about the task without answering it (grade 1)."""
        raise NotImplementedError

    def answer_sentences(self, spec: tuple, answer: str) -> list[str]:
        """Family-flavoured short sentences that state the answer (grade 4 when verified)."""
        return []

    # -- shared behaviour
    def generate(self, rng: random.Random) -> Task:
        spec = self.sample_spec(rng)
        return Task(self.name, self.render(spec, rng), self.solve(spec))

    def grade(self, prompt: str, response: str | None) -> int | None:
        spec = self.read(prompt) if isinstance(prompt, str) else None
        return None if spec is None else self.grade_spec(spec, prompt, response)

    def relevant(self, spec: tuple, prompt: str, response: str) -> bool:
        content = {t for t in tx.tokens(prompt) if len(t) >= 3} - tx.STOP
        return bool(set(tx.tokens(response)) & (self.topic | content))

    def grade_spec(self, spec: tuple, prompt: str, response: str | None) -> int:
        if not isinstance(response, str) or not response.strip():
            return 0
        ref = self.solve(spec)
        cands = self.candidates(spec, response)
        values = [v for v, _, _ in cands]
        if ref in values:
            residual = tx.remove_spans(response, cands)
            if values == [ref] and not tx.ALNUM.search(residual):
                return 5
            echoes = self.echoes(spec, prompt)
            competing = any(v != ref and v not in echoes for v in values)
            extra = [w.lower() for w in tx.WORD_TOKEN.findall(residual)]
            repetitive = values.count(ref) >= 3 or max(Counter(extra).values(), default=0) >= 3
            return 4 if not competing and not repetitive and len(extra) <= MAX_EXTRA_WORDS else 3
        if values:
            return 2
        return 1 if self.relevant(spec, prompt, response) else 0

    def echoes(self, spec: tuple, prompt: str) -> set[str]:
        """Candidate values that never count against a response: by default those the prompt contains."""
        return {v for v, _, _ in self.candidates(spec, prompt)}

    def corrupt(self, task: Task, level: int, rng: random.Random) -> str:
        """A response to ``task`` whose grade is exactly ``level`` (0..5)."""
        if level not in SCALE:
            raise ValueError(f"level must be one of {SCALE}, got {level!r}")
        spec = self.read(task.prompt)
        if spec is None:
            raise ValueError(f"{self.name} cannot read prompt {task.prompt!r}")
        a = self.solve(spec)
        wrong = [w for w in dict.fromkeys(self.wrong_answers(spec, rng)) if w != a]
        rng.shuffle(wrong)
        if level == 5:
            options = [a, a, f"{a}."]
        elif level == 4:
            options = [t.format(a=a) for t in _LEVEL4] + self.answer_sentences(spec, a)
        elif level == 3:
            options = [t.format(a=a) for t in _LEVEL3_LONG + _LEVEL3_REPEAT]
            options += [t.format(a=a, w=w) for t in _LEVEL3_HEDGE for w in wrong[:2]]
        elif level == 2:
            options = [t.format(w=w) for t in _LEVEL2 for w in wrong]
        elif level == 1:
            options = list(self.mentions(spec))
        else:
            options = list(tx.UNRELATED)
        rng.shuffle(options)
        for text in options:
            if self.grade_spec(spec, task.prompt, text) == level:
                return text
        raise RuntimeError(f"no grade-{level} response found for {task.prompt!r}")  # a bug, not data


def _pick(rng: random.Random, templates: tuple[str, ...], **fields) -> str:
    return rng.choice(templates).format(**fields)


def _fmt(nums) -> str:
    return ", ".join(str(n) for n in nums)


def _near(r: int, extra: tuple[int, ...] = ()) -> list[str]:
    vals = [r + d for d in (1, -1, 2, -2, 10, -10)] + list(extra)
    return [str(v) for v in vals if v >= 0 and v != r]


class _Numeric(Family):
    """A family whose answer is one integer."""

    def candidates(self, spec: tuple, text: str) -> list[Cand]:
        return tx.numeric_candidates(text)

    def wrong_answers(self, spec: tuple, rng: random.Random) -> list[str]:
        return _near(int(self.solve(spec)))


# ---------------------------------------------------------------------------------------- arithmetic
_N = r"(-?\d+)"
_ARITH_PATTERNS: tuple[tuple[re.Pattern, str, bool], ...] = tuple(
    (re.compile(p, re.I), op, swap) for p, op, swap in (
        (r"\badd(?:ing)?\s+" + _N + r"\s+(?:and|to|with|plus)\s+" + _N, "+", False),
        (r"\b(?:sum|total)\s+of\s+" + _N + r"\s+and\s+" + _N, "+", False),
        (_N + r"\s+and\s+" + _N + r"\s+(?:added|summed)", "+", False),
        (r"\bsubtract(?:ing)?\s+" + _N + r"\s+from\s+" + _N, "-", True),
        (r"\btake\s+(?:away\s+)?" + _N + r"\s+(?:away\s+)?from\s+" + _N, "-", True),
        (r"\bdifference\s+(?:between|of)\s+" + _N + r"\s+and\s+" + _N, "-", False),
        (r"\bmultiply(?:ing)?\s+" + _N + r"\s+(?:by|and|with|times)\s+" + _N, "*", False),
        (r"\bproduct\s+of\s+" + _N + r"\s+and\s+" + _N, "*", False),
        (_N + r"\s*(\+|-|\*|x|×|·|plus\b|minus\b|less\b|times\b|multiplied\s+by\b)\s*" + _N, "?", False),
    ))
_SYMBOL_OP = {"+": "+", "plus": "+", "-": "-", "minus": "-", "less": "-", "*": "*", "x": "*", "×": "*",
              "·": "*", "times": "*", "multiplied by": "*"}
_DIGIT_RUN = re.compile(r"\d+")
_ARITH_TEMPLATES = {
    "+": ("What is {a} + {b}?", "Compute {a} plus {b}.", "Add {a} and {b}.", "What is the sum of {a} and {b}?",
          "{a} + {b} = ?", "How much is {a} plus {b}?"),
    "-": ("What is {a} - {b}?", "Compute {a} minus {b}.", "Subtract {b} from {a}.",
          "What is the difference between {a} and {b}?", "{a} - {b} = ?", "How much is {a} minus {b}?"),
    "*": ("What is {a} * {b}?", "Compute {a} times {b}.", "Multiply {a} by {b}.",
          "What is the product of {a} and {b}?", "{a} x {b} = ?", "How much is {a} times {b}?"),
}
_OP_WORD = {"+": "plus", "-": "minus", "*": "times"}
_OP_MENTIONS = {
    "+": ("This is an addition problem.", "You want me to add these numbers.", "This asks for a sum."),
    "-": ("This is a subtraction problem.", "You want me to subtract these numbers.",
          "This asks for a difference."),
    "*": ("This is a multiplication problem.", "You want me to multiply these numbers.",
          "This asks for a product."),
}


def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


class Arithmetic(_Numeric):
    name = "arithmetic"
    topic = frozenset("add addition adding sum plus minus subtract subtraction subtracting difference multiply "
                      "multiplication multiplying product times arithmetic math calculate calculation equation "
                      "numbers total".split())

    def sample_spec(self, rng):
        op = rng.choice("+-*")
        if op == "+":
            return op, rng.randint(1, 50), rng.randint(1, 50)
        if op == "-":
            a = rng.randint(2, 50)
            return op, a, rng.randint(1, a - 1)
        return op, rng.randint(2, 12), rng.randint(2, 12)

    def render(self, spec, rng):
        op, a, b = spec
        return _pick(rng, _ARITH_TEMPLATES[op], a=a, b=b)

    def read(self, prompt):
        text = tx.digits_for_number_words(tx.clean(prompt))
        if len(_DIGIT_RUN.findall(text)) != 2:
            return None
        for pattern, op, swap in _ARITH_PATTERNS:
            m = pattern.search(text)
            if not m:
                continue
            if op == "?":
                a, sym, b = m.group(1), m.group(2), m.group(3)
                op = _SYMBOL_OP[re.sub(r"\s+", " ", sym.lower())]
            else:
                a, b = m.group(1), m.group(2)
                if swap:
                    a, b = b, a
            return op, int(a), int(b)
        return None

    def solve(self, spec):
        return str(_apply(*spec))

    def wrong_answers(self, spec, rng):
        op, a, b = spec
        others = tuple(_apply(o, a, b) for o in "+-*" if o != op)
        return _near(_apply(op, a, b), tuple(v for v in others if v >= 0))

    def mentions(self, spec):
        return list(_OP_MENTIONS[spec[0]]) + ["This question is about arithmetic."]

    def answer_sentences(self, spec, answer):
        op, a, b = spec
        return [f"{a} {op} {b} = {answer}", f"{a} {_OP_WORD[op]} {b} is {answer}."]


# ------------------------------------------------------------------------------------------ sequence
_SEQ_CUE = re.compile(r"\bnext\b|\bcontinue\w*|\bfollows?\b|\bcomes?\s+after\b|\bsequence\b|\bpattern\b|"
                      r"\bseries\b|\bterm\b|\bprogression\b", re.I)
_SEQ_TEMPLATES = ("What comes next: {s}, ?", "What is the next number in {s}?", "Continue the sequence: {s}",
                  "Find the next term: {s}, ...", "What number follows {s}?")


class Sequence(_Numeric):
    name = "sequence"
    topic = frozenset("sequence pattern next term series continue numbers follows step progression".split())

    def sample_spec(self, rng):
        start, step, k = rng.randint(0, 30), rng.randint(1, 9), rng.randint(3, 4)
        return tuple(start + i * step for i in range(k))

    def render(self, spec, rng):
        return _pick(rng, _SEQ_TEMPLATES, s=_fmt(spec))

    def read(self, prompt):
        text = tx.clean(prompt)
        if not _SEQ_CUE.search(text):
            return None
        nums = tx.ints(text)
        if len(nums) < 3:
            return None
        steps = {b - a for a, b in zip(nums, nums[1:], strict=False)}
        return tuple(nums) if len(steps) == 1 and 0 not in steps else None

    def solve(self, spec):
        return str(spec[-1] + spec[-1] - spec[-2])

    def wrong_answers(self, spec, rng):
        r = int(self.solve(spec))
        return _near(r, (spec[-1], r + spec[-1] - spec[-2]))

    def mentions(self, spec):
        return ["This is a number sequence.", "You want the next term of the pattern.",
                "This asks me to continue a series."]

    def answer_sentences(self, spec, answer):
        return [f"The next number is {answer}.", f"{_fmt(spec)}, {answer}"]


# ------------------------------------------------------------------------------ successor, parity
# Opt-in number tasks whose answer follows from the prompt's number by a fixed rule. Measured
# (docs/cpu_study.md): a model of a million parameters does not learn them in minutes, with whole-number
# or per-digit tokens; larger rungs may.
_AFTER_CUE = re.compile(r"\bcomes?\s+after\b|\bfollows?\b|\bone\s+more\s+than\b|\bnext\s+number\s+after\b|"
                        r"\bcount\s+up\b|\bafter\b", re.I)
_BEFORE_CUE = re.compile(r"\bcomes?\s+before\b|\bprecedes?\b|\bone\s+less\s+than\b|\bcount\s+down\b|"
                         r"\bbefore\b", re.I)
_STEP_TEMPLATES = {
    "after": ("What number comes after {n}?", "What is one more than {n}?", "Which number follows {n}?",
              "Count up one from {n}.", "What is the next number after {n}?"),
    "before": ("What number comes before {n}?", "What is one less than {n}?", "Which number precedes {n}?",
               "Count down one from {n}.", "What is the number just before {n}?"),
}


class Successor(_Numeric):
    name = "successor"
    topic = frozenset("number before next follows precedes count counting more less comes".split())

    def sample_spec(self, rng):
        return rng.choice(("after", "before")), rng.randint(1, 998)

    def render(self, spec, rng):
        mode, n = spec
        return _pick(rng, _STEP_TEMPLATES[mode], n=n)

    def read(self, prompt):
        text = tx.clean(prompt)
        nums = tx.ints(text)
        if len(nums) != 1:
            return None
        after, before = bool(_AFTER_CUE.search(text)), bool(_BEFORE_CUE.search(text))
        if after == before:
            return None
        return ("after" if after else "before", nums[0])

    def solve(self, spec):
        mode, n = spec
        return str(n + 1 if mode == "after" else n - 1)

    def wrong_answers(self, spec, rng):
        mode, n = spec
        return _near(int(self.solve(spec)), (n,))

    def mentions(self, spec):
        return ["You want the next number when counting.", "This asks which number is next in counting order.",
                "You want a neighbouring number."] if spec[0] == "after" else [
                "You want the previous number when counting.", "This asks which number comes earlier.",
                "You want a neighbouring number."]

    def answer_sentences(self, spec, answer):
        mode, n = spec
        return [f"{answer} comes {mode} {n}.", f"The number is {answer}."]


_PARITY_WORD = re.compile(r"\b(odd|even)\b", re.I)
_PARITY_TEMPLATES = ("Is {n} odd or even?", "Is the number {n} even or odd?", "Say whether {n} is odd or even.",
                     "Tell me if {n} is even or odd.", "Odd or even: {n}?")


class Parity(Family):
    name = "parity"
    topic = frozenset("parity divisible number two whole integer".split())

    def sample_spec(self, rng):
        return (rng.randint(0, 999),)

    def render(self, spec, rng):
        return _pick(rng, _PARITY_TEMPLATES, n=spec[0])

    def read(self, prompt):
        text = tx.clean(prompt)
        nums = tx.ints(text)
        if len(nums) != 1 or {v for v, _, _ in self.candidates((), text)} != {"odd", "even"}:
            return None
        return (nums[0],)

    def solve(self, spec):
        return "even" if spec[0] % 2 == 0 else "odd"

    def candidates(self, spec, text):
        return [(m.group(1).lower(), m.start(), m.end()) for m in _PARITY_WORD.finditer(text)]

    def echoes(self, spec, prompt):
        """None: the prompt names both answers, so a response that names both has not chosen."""
        return set()

    def wrong_answers(self, spec, rng):
        return ["odd" if spec[0] % 2 == 0 else "even"]

    def mentions(self, spec):
        return ["You want to know whether it divides by two.", "This asks about the parity of the number.",
                "This is a question about parity."]

    def answer_sentences(self, spec, answer):
        return [f"{spec[0]} is {answer}.", f"It is an {answer} number."]


# ------------------------------------------------------------------------------------------ list tasks
_SORT_CUE = re.compile(r"\bsort\w*|\border\b|\bordered\b|\barrange\w*|\brank\w*", re.I)
_DESC_CUE = re.compile(r"descend\w*|decreas\w*|\b(?:largest|biggest|highest|greatest|high|big)\s+to\s+"
                       r"(?:smallest|lowest|least|low|small)\b|\breverse\s+order\b", re.I)
_SORT_TEMPLATES = {
    False: ("Sort these numbers: {s}", "Sort {s} in ascending order.", "Arrange from smallest to largest: {s}",
            "Put {s} in increasing order.", "Order these numbers from low to high: {s}"),
    True: ("Sort {s} in descending order.", "Arrange from largest to smallest: {s}",
           "Sort these numbers from highest to lowest: {s}", "Put {s} in decreasing order."),
}


def _distinct(rng: random.Random, lo: int, hi: int, k: int) -> tuple[int, ...]:
    return tuple(rng.sample(range(lo, hi + 1), k))


class Sort(Family):
    name = "sort"
    topic = frozenset("sort sorted sorting order ascending descending arrange smallest largest numbers list "
                      "increasing decreasing".split())

    def sample_spec(self, rng):
        desc = rng.random() < 0.4
        while True:
            nums = _distinct(rng, 0, 99, rng.randint(3, 5))
            if list(nums) != sorted(nums, reverse=desc):
                return nums, desc

    def render(self, spec, rng):
        nums, desc = spec
        return _pick(rng, _SORT_TEMPLATES[desc], s=_fmt(nums))

    def read(self, prompt):
        text = tx.clean(prompt)
        if not _SORT_CUE.search(text):
            return None
        nums = tx.longest_run(text)
        return None if nums is None else (tuple(nums), bool(_DESC_CUE.search(text)))

    def solve(self, spec):
        nums, desc = spec
        return _fmt(sorted(nums, reverse=desc))

    def candidates(self, spec, text):
        return [(_fmt(run), s, e) for run, s, e in tx.int_runs(text)]

    def wrong_answers(self, spec, rng):
        nums, desc = spec
        ref = sorted(nums, reverse=desc)
        swaps = []
        for i in range(len(ref) - 1):
            w = list(ref)
            w[i], w[i + 1] = w[i + 1], w[i]
            swaps.append(_fmt(w))
        return [_fmt(nums), _fmt(ref[::-1]), _fmt(ref[:-1])] + swaps

    def mentions(self, spec):
        return ["You want these numbers sorted.", "This asks me to sort a list.",
                "You want the list in order."]

    def answer_sentences(self, spec, answer):
        return [f"Sorted: {answer}", f"In order: {answer}."]


_MAX_CUE = re.compile(r"\b(?:largest|biggest|greatest|highest|maximum|max|larger|bigger|greater|higher)\b", re.I)
_MIN_CUE = re.compile(r"\b(?:smallest|lowest|least|minimum|min|smaller|lower|fewest)\b", re.I)
_EXTREME_TEMPLATES = {
    "max": ("What is the largest number in {s}?", "Find the maximum of {s}.", "Which is biggest: {s}?",
            "Give the highest of these numbers: {s}", "Pick the greatest number: {s}"),
    "min": ("What is the smallest number in {s}?", "Find the minimum of {s}.", "Which is smallest: {s}?",
            "Give the lowest of these numbers: {s}", "Pick the least number: {s}"),
}


class Extreme(_Numeric):
    name = "extreme"
    topic = frozenset("largest smallest biggest maximum minimum highest lowest greatest least numbers list "
                      "compare max min".split())

    def sample_spec(self, rng):
        return rng.choice(("max", "min")), _distinct(rng, 0, 99, rng.randint(3, 5))

    def render(self, spec, rng):
        mode, nums = spec
        return _pick(rng, _EXTREME_TEMPLATES[mode], s=_fmt(nums))

    def read(self, prompt):
        text = tx.clean(prompt)
        is_max, is_min = bool(_MAX_CUE.search(text)), bool(_MIN_CUE.search(text))
        if is_max == is_min:
            return None
        nums = tx.longest_run(text)
        return None if nums is None else ("max" if is_max else "min", tuple(nums))

    def solve(self, spec):
        mode, nums = spec
        return str(max(nums) if mode == "max" else min(nums))

    def wrong_answers(self, spec, rng):
        mode, nums = spec
        r = int(self.solve(spec))
        return [str(n) for n in nums] + _near(r)

    def mentions(self, spec):
        which = "largest" if spec[0] == "max" else "smallest"
        return [f"You want the {which} number in the list.", "This asks me to compare the numbers.",
                f"You are looking for the {which} value."]

    def answer_sentences(self, spec, answer):
        which = "largest" if spec[0] == "max" else "smallest"
        return [f"The {which} number is {answer}.", f"{answer} is the {which}."]


# ------------------------------------------------------------------------------------- first / last
_FIRST_CUE, _LAST_CUE = re.compile(r"\bfirst\b", re.I), re.compile(r"\blast\b", re.I)
_LIST_SEP = r"(?:\s*,\s*(?:(?:and|or)\s+)?|\s+(?:and|or)\s+)"
_WORD_LIST = re.compile(r"[A-Za-z]+(?:" + _LIST_SEP + r"[A-Za-z]+){2,}")
_PICK_TEMPLATES = {
    "first": ("What is the first word in this list: {s}?", "Give the first word of: {s}",
              "Which word is first: {s}?", "Name the first item in {s}.", "Write only the first word: {s}"),
    "last": ("What is the last word in this list: {s}?", "Give the last word of: {s}",
             "Which word is last: {s}?", "Name the last item in {s}.", "Write only the last word: {s}"),
}


class Pick(Family):
    """Copy one word of a list by its position: a task a model of a million parameters learns in minutes."""

    name = "pick"
    topic = frozenset("word words list item items first last".split())

    def sample_spec(self, rng):
        return rng.choice(("first", "last")), tuple(rng.sample(tx.WORDS, rng.randint(3, 4)))

    def render(self, spec, rng):
        mode, words = spec
        return _pick(rng, _PICK_TEMPLATES[mode], s=", ".join(words))

    def read(self, prompt):
        text = tx.clean(prompt)
        first, last = bool(_FIRST_CUE.search(text)), bool(_LAST_CUE.search(text))
        if first == last:
            return None
        runs = [m.group(0) for m in _WORD_LIST.finditer(text)]
        if not runs:
            return None
        words = [w.lower() for w in re.split(_LIST_SEP, max(runs, key=len))]
        return ("first" if first else "last", tuple(words))

    def solve(self, spec):
        mode, words = spec
        return words[0] if mode == "first" else words[-1]

    def candidates(self, spec, text):
        found = []
        for w in dict.fromkeys(spec[1]):
            found += [(w, m.start(), m.end()) for m in re.finditer(rf"(?<![A-Za-z]){re.escape(w)}(?![A-Za-z])",
                                                                   text, re.I)]
        return sorted(found, key=lambda c: c[1])

    def echoes(self, spec, prompt):
        """None: every word of the list is in the prompt, so naming several words is not choosing one."""
        return set()

    def wrong_answers(self, spec, rng):
        return [w for w in spec[1] if w != self.solve(spec)]

    def mentions(self, spec):
        return [f"You want the {spec[0]} word of the list.", "This asks me to pick a word from a list.",
                "You want one item of the list."]

    def answer_sentences(self, spec, answer):
        return [f"The {spec[0]} word is {answer}.", f"{answer} is {spec[0]}."]


# ----------------------------------------------------------------------------------------- word tasks
_COUNT_CUE = re.compile(r"\bhow\s+many\b|\bcount\b|\bnumber\s+of\b|\bhow\s+often\b|\boccurrences?\b", re.I)
_L = r"""['"]?([a-z])['"]?"""
_LETTER_PATTERNS = tuple(re.compile(p, re.I) for p in (
    r"\bletter\s+" + _L + r"(?:'s)?(?![a-z])",
    r"\bhow\s+many\s+" + _L + r"(?:'?s)?(?![a-z])",
    r"\bcount(?:\s+how\s+many)?\s+(?:the\s+)?" + _L + r"(?:'?s)?(?![a-z])",
    r"""\b(?:times|often)\s+(?:does\s+|do\s+|is\s+)?(?:the\s+)?['"]([a-z])['"]""",
    r"\b(?:times|often)\s+(?:does|do|is)\s+(?:the\s+)?([a-z])\s+(?:appear|occur|show)",
    r"\bnumber\s+of\s+" + _L + r"(?:'?s)?(?![a-z])",
    r"\boccurrences?\s+of\s+(?:the\s+)?(?:letter\s+)?" + _L + r"(?![a-z])",
))
_COUNT_TEMPLATES = ("How many times does the letter '{c}' appear in '{w}'?", "Count the letter {c} in {w}.",
                    "How many {c}'s are in {w}?", "In the word {w}, how many times does {c} occur?",
                    "Count how many '{c}' are in '{w}'.")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


class CountLetter(_Numeric):
    name = "count"
    topic = frozenset("count letter letters times appears occurs occurrences".split())

    def sample_spec(self, rng):
        word = rng.choice(tx.WORDS)
        pool = sorted(set(word)) if rng.random() < 0.85 else sorted(set(_ALPHABET) - set(word))
        return rng.choice(pool), word

    def render(self, spec, rng):
        c, w = spec
        return _pick(rng, _COUNT_TEMPLATES, c=c, w=w)

    def read(self, prompt):
        text = tx.clean(prompt)
        if not _COUNT_CUE.search(text):
            return None
        letter = next((m.group(1).lower() for p in _LETTER_PATTERNS for m in [p.search(text)] if m), None)
        word = tx.target_word(text)
        return None if letter is None or word is None else (letter, word)

    def solve(self, spec):
        c, w = spec
        return str(w.count(c))

    def wrong_answers(self, spec, rng):
        c, w = spec
        r = w.count(c)
        return _near(r, (len(w), 0))

    def mentions(self, spec):
        w = spec[1]
        return [f"You want me to count a letter in {w}.", f"This asks how often a letter appears in {w}.",
                "You want to know how often a letter occurs."]

    def answer_sentences(self, spec, answer):
        c, w = spec
        return [f"The letter {c} appears {answer} times.", f"{w} has {answer} of them."]


_LEN_CUE = re.compile(r"\bhow\s+many\s+(?:letters|characters|chars)\b|\bhow\s+long\b|\blength\b|"
                      r"\bcount\s+(?:all\s+)?(?:the\s+)?(?:letters|characters)\b|"
                      r"\bnumber\s+of\s+(?:letters|characters)\b|\b(?:letter|character)\s+count\b", re.I)
_LEN_TEMPLATES = ("How many letters are in the word '{w}'?", "How long is the word {w}?",
                  "Count the letters in {w}.", "What is the length of '{w}'?", "How many letters does {w} have?")


class _OneWord:
    """Tasks about one word of the pool: spec ``(word,)``, read by a cue and the prompt's target word."""

    cue: re.Pattern
    templates: tuple[str, ...]

    def sample_spec(self, rng):
        return (rng.choice(tx.WORDS),)

    def render(self, spec, rng):
        return _pick(rng, self.templates, w=spec[0])

    def read(self, prompt):
        text = tx.clean(prompt)
        if not self.cue.search(text):
            return None
        word = tx.target_word(text)
        return None if word is None else (word,)


class Length(_OneWord, _Numeric):
    name = "length"
    topic = frozenset("length letters long characters count".split())
    cue, templates = _LEN_CUE, _LEN_TEMPLATES

    def solve(self, spec):
        return str(len(spec[0]))

    def mentions(self, spec):
        w = spec[0]
        return [f"You want the length of {w}.", f"This asks how many letters {w} has.",
                "You want me to count the letters."]

    def answer_sentences(self, spec, answer):
        return [f"{spec[0]} has {answer} letters.", f"The word is {answer} letters long."]


_REVERSE_CUE = re.compile(r"\brevers\w*|\bbackwards?\b", re.I)
_REVERSE_TEMPLATES = ("Reverse the word '{w}'.", "Spell {w} backwards.", "Write '{w}' in reverse.",
                      "What is {w} spelled backwards?", "Reverse the letters of {w}.")


class Reverse(_OneWord, Family):
    name = "reverse"
    topic = frozenset("reverse reversed reversing backwards backward letters spelled spell".split())
    cue, templates = _REVERSE_CUE, _REVERSE_TEMPLATES

    def solve(self, spec):
        return spec[0][::-1]

    def candidates(self, spec, text):
        """Anagrams of the word; for words of 5+ letters also near-anagrams (one letter off)."""
        w = spec[0]
        out = []
        for m in tx.ALPHA.finditer(text):
            t = m.group(0).lower()
            if sorted(t) == sorted(w) or (len(w) >= 5 and abs(len(t) - len(w)) <= 1
                                          and tx.letter_overlap(t, w) >= len(w) - 1):
                out.append((t, m.start(), m.end()))
        return out

    def wrong_answers(self, spec, rng):
        w = spec[0]
        r = w[::-1]
        rotations = [r[i:] + r[:i] for i in range(1, len(r))]
        swapped = [r[:i] + r[i + 1] + r[i] + r[i + 2:] for i in range(len(r) - 1)]
        return [w] + rotations[:2] + swapped[:2]

    def mentions(self, spec):
        return ["You want a word spelled backwards.", "This asks me to reverse the letters.",
                "This is about reversing a word."]

    def answer_sentences(self, spec, answer):
        return [f"{spec[0]} backwards is {answer}.", f"Reversed: {answer}"]


_UPPER_CUE = re.compile(r"\bupper\s*-?\s*case\b|\bcapital\s+letters\b|\bin\s+capitals\b|\bcaps\b|"
                        r"\bcapitali[sz]e", re.I)
_LOWER_CUE = re.compile(r"\blower\s*-?\s*case\b|\bsmall\s+letters\b|\bno\s+capitals\b", re.I)
_CASE_TEMPLATES = {
    "upper": ("Write '{w}' in uppercase.", "Convert {w} to upper case.", "Write {w} in capital letters.",
              "Make {w} all caps.", "What is {w} in uppercase?"),
    "lower": ("Write '{w}' in lowercase.", "Convert {w} to lower case.", "Write {w} in small letters.",
              "Make {w} all lowercase.", "What is {w} in lowercase?"),
}


class Case(Family):
    name = "case"
    topic = frozenset("uppercase lowercase upper lower capital capitals letters caps case".split())

    def sample_spec(self, rng):
        return rng.choice(("upper", "lower")), rng.choice(tx.WORDS)

    def render(self, spec, rng):
        mode, w = spec
        shown = w if mode == "upper" else rng.choice((w.upper(), w.capitalize()))
        return _pick(rng, _CASE_TEMPLATES[mode], w=shown)

    def read(self, prompt):
        text = tx.clean(prompt)
        up, low = bool(_UPPER_CUE.search(text)), bool(_LOWER_CUE.search(text))
        if up == low:
            return None
        word = tx.target_word(text)
        return None if word is None else ("upper" if up else "lower", word)

    def solve(self, spec):
        mode, w = spec
        return w.upper() if mode == "upper" else w.lower()

    def candidates(self, spec, text):
        """The word in any capitalisation, kept as written (case is what is graded)."""
        w = spec[1]
        return [(m.group(0), m.start(), m.end()) for m in tx.ALPHA.finditer(text) if m.group(0).lower() == w]

    def wrong_answers(self, spec, rng):
        mode, w = spec
        return [w.lower() if mode == "upper" else w.upper(), w.capitalize(), w[:-1] + w[-1].swapcase()]

    def mentions(self, spec):
        which = "uppercase" if spec[0] == "upper" else "lowercase"
        return [f"You want the word in {which}.", "This asks me to change the letter case.",
                f"This is about {which} letters."]

    def answer_sentences(self, spec, answer):
        which = "uppercase" if spec[0] == "upper" else "lowercase"
        return [f"In {which}: {answer}", f"Here it is in {which}: {answer}"]


_TIMES = re.compile(r"\b(\d+|" + "|".join(tx.NUMBER_WORDS) + r")\s+times\b|\b(twice|thrice)\b", re.I)
_REPEAT_TEMPLATES = ("Repeat the word '{w}' {n} times.", "Write {w} {n} times.",
                     "Say '{w}' {n} times, separated by spaces.", "Write the word {w} {nw} times.",
                     "Repeat {w} {nw} times.")
_NUM_NAME = {v: k for k, v in tx.NUMBER_WORDS.items()}


@lru_cache(maxsize=1024)
def _run_re(word: str) -> re.Pattern:
    w = re.escape(word)
    return re.compile(rf"(?<![A-Za-z]){w}(?:(?:\s*[,;]\s*|\s+)(?:and\s+)?{w})*(?![A-Za-z])", re.I)


class Repeat(Family):
    name = "repeat"
    topic = frozenset("repeat repeated repeating times again copies".split())

    def sample_spec(self, rng):
        return rng.choice(tx.WORDS), rng.randint(2, 4)

    def render(self, spec, rng):
        w, n = spec
        if n == 2 and rng.random() < 0.2:
            return _pick(rng, ("Write {w} twice.", "Say '{w}' twice."), w=w)
        return _pick(rng, _REPEAT_TEMPLATES, w=w, n=n, nw=_NUM_NAME[n])

    def read(self, prompt):
        text = tx.clean(prompt)
        m = _TIMES.search(text)
        if not m:
            return None
        if m.group(2):
            n = 2 if m.group(2).lower() == "twice" else 3
        else:
            g = m.group(1).lower()
            n = tx.NUMBER_WORDS[g] if g in tx.NUMBER_WORDS else int(g)
        word = tx.target_word(text)
        return None if word is None or not 1 <= n <= 20 else (word, n)

    def solve(self, spec):
        w, n = spec
        return " ".join([w] * n)

    def candidates(self, spec, text):
        """Runs of the word (separated by spaces, commas or "and"), as "w w w" with the run's length."""
        w = spec[0]
        pat = re.compile(re.escape(w), re.I)
        return [(" ".join([w] * len(pat.findall(m.group(0)))), m.start(), m.end()) for m in _run_re(w).finditer(text)]

    def wrong_answers(self, spec, rng):
        w, n = spec
        return [" ".join([w] * k) for k in (n - 1, n + 1, n + 2) if k >= 1]

    def mentions(self, spec):
        return ["You want a word repeated several times.", "This asks me to repeat a word.",
                "You want the same word again and again."]

    def answer_sentences(self, spec, answer):
        w, n = spec
        return [f"Here it is: {answer}", f"{w} {n} times: {answer}"]


# ------------------------------------------------------------------------------------------ registry
# Reading order matters where cues overlap: a sort prompt ("largest to smallest") is tried before extreme,
# a count prompt ("how many times") before repeat, a letter count before a word length.
FAMILIES: dict[str, Family] = {f.name: f for f in (
    Arithmetic(), Sequence(), Successor(), Parity(), Sort(), Extreme(), Pick(), CountLetter(), Length(), Reverse(),
    Case(), Repeat())}


# The suite a job gets with data.families=null, and the tiny models' pretraining corpus: the first nine
# families (successor, parity and pick were added later).
DEFAULT_FAMILIES: tuple[str, ...] = ("arithmetic", "sequence", "sort", "extreme", "count", "length", "reverse",
                                     "case", "repeat")

# The default suite (DataConfig.families): the copying families a ~1M-parameter model learns from a few
# thousand answers in minutes on a CPU (docs/cpu_study.md). On the nine above it learns none of them.
LEARNABLE_FAMILIES: tuple[str, ...] = ("pick", "repeat", "extreme")


def read_prompt(prompt: str | None) -> tuple[str, tuple] | None:
    """``(family_name, spec)`` of the first family that reads ``prompt``, or None."""
    if not isinstance(prompt, str) or not prompt.strip():
        return None
    for name, fam in FAMILIES.items():
        spec = fam.read(prompt)
        if spec is not None:
            return name, spec
    return None


def reference_answer(prompt: str | None) -> str | None:
    """The reference answer to any readable prompt, or None."""
    found = read_prompt(prompt)
    return None if found is None else FAMILIES[found[0]].solve(found[1])


def grade(prompt: str | None, response: str | None) -> int | None:
    """0-5 grade of ``response`` to ``prompt`` (scale in the module docstring); None if no family reads it."""
    found = read_prompt(prompt)
    if found is None:
        return None
    name, spec = found
    return FAMILIES[name].grade_spec(spec, prompt, response)


def is_correct(prompt: str | None, response: str | None) -> bool | None:
    """True when the grade is at least 4 (the correct answer, stated plainly); None if unreadable."""
    g = grade(prompt, response)
    return None if g is None else g >= CORRECT_MIN


def corrupt(task: Task, level: int, rng: random.Random) -> str:
    """A response to ``task`` whose grade is exactly ``level``."""
    return FAMILIES[task.family].corrupt(task, level, rng)
