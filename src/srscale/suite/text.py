"""Vocabulary and token helpers shared by the suite's families (pure functions, compiled regexes).

Everything here is plain data or a pure function of its arguments, so the families that use it stay
deterministic. The word list is the pool the word families draw their target words from; it is kept
disjoint from :data:`STOP` (instruction vocabulary) so that a target word can always be told apart from
the words of the instruction around it.
"""

from __future__ import annotations

import re
from collections import Counter

# --------------------------------------------------------------------------------------------- words
WORDS: tuple[str, ...] = tuple("""
apple banana cherry grape lemon mango melon peach pear plum berry olive onion carrot potato tomato bean
corn rice bread cake candy cookie honey juice milk butter cheese salt sugar soup pepper garlic noodle
cat dog horse mouse bird fish frog duck goat sheep cow pig lion tiger bear wolf fox deer rabbit snake
turtle whale shark eagle owl bee ant spider zebra monkey camel panda parrot donkey kitten puppy beetle
house door window table chair bed lamp clock sofa shelf desk carpet roof wall floor garden yard fence
gate kitchen pillow blanket mirror candle basket bucket ladder hammer
tree flower grass leaf forest river lake ocean beach island hill valley desert cloud rain snow storm
wind sun moon star planet stone rock sand meadow jungle canyon volcano
car bus train truck boat ship plane bike wheel road bridge street city town village farm market school
museum castle tower harbor rocket wagon tunnel
red blue green yellow purple orange pink brown black white silver gold
happy sad angry calm brave quiet loud soft hard warm cold sweet bitter fresh clean dirty bright dark
heavy quick slow tall short young old rich poor gentle proud lucky funny
run jump swim walk sing dance read cook sleep climb paint draw play laugh smile think dream build drive
fly shout whisper carry
book pen pencil paper map bag cup plate bowl spoon fork knife bottle ball kite drum piano guitar violin
flute camera ticket wallet
shirt dress hat shoe sock coat glove scarf ring watch jacket boot
king queen prince knight wizard pirate robot doctor farmer baker sailor pilot artist singer dancer
friend mother father sister brother baby child uncle cousin
morning evening night summer winter spring autumn holiday
water fire earth metal glass wood cotton silk paper
""".split())
WORDS = tuple(dict.fromkeys(WORDS))  # keep first occurrence, stable order

NUMBER_WORDS: dict[str, int] = {
    w: i for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen twenty".split())
}

# Instruction vocabulary: never a target word. Used to find the one content word of a word-task prompt.
STOP: frozenset[str] = frozenset("""
a an the and or but of in on at to for from by with into onto about as is are was were be been being am
do does did done have has had can could would should will shall may might must please kindly now just
only also then so if it its this that these those there here what which who whom whose how many much
why when where me my you your we our us he she they them their him her i s t ll ve re d m don doesn
isn aren won can't hey okay ok sure want need like know let see get got go use using given following
below above same way again more after before than every each all some any no not yes thanks thank
word words letter letters character characters char chars string text term spelling
count counting counted number numbers total amount times time often occur occurs occurring occurrence
occurrences appear appears appearing appeared show shows found contain contains containing inside within
length long longer size
reverse reversed reversing reversal backwards backward spell spelled spelt order
write written writing wrote say said print output type typed give return tell make made put convert
change turn transform rewrite copy form version
upper lower uppercase lowercase case capital capitals capitalized capitalize capitalise caps small
capitalised cased
repeat repeated repeating repetition twice thrice once row separated separate spaces space comma commas
line lines newline
answer question result reply respond response
""".split()) | frozenset(NUMBER_WORDS)

# Sentences unrelated to every family (no digits, number words, task vocabulary or suite words).
UNRELATED: tuple[str, ...] = (
    "Thanks for asking, have a nice day.",
    "The weather is pleasant this afternoon.",
    "Music helps people relax after work.",
    "I would rather talk about something else.",
    "Please remember to drink enough tea.",
    "My neighbor planted tulips near the porch.",
    "Good manners leave a lasting impression.",
    "Sorry, I cannot help with that request.",
    "Hello there! How are you doing?",
    "Traveling teaches patience and curiosity.",
    "Let us talk about the history of jazz.",
    "Coffee tastes better in company.",
    "Yesterday was a lovely day for everyone.",
    "Learning new skills takes patience.",
    "I do not know.",
    "",
)

# -------------------------------------------------------------------------------------------- regexes
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "`": "'",
                         "\u2212": "-", "\u2013": "-", "\u00a0": " "})
_SPACES = re.compile(r"\s+")
ALPHA = re.compile(r"[A-Za-z]+")
ALNUM = re.compile(r"[A-Za-z0-9]")
WORD_TOKEN = re.compile(r"[A-Za-z0-9]+")
INT = r"(?<![\w.])-?\d+(?!\w|\.\d)"
INT_RE = re.compile(INT)
NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.I)
# A run of integers written as a list: "2, 5, 9", "2 5 9", "2, 5 and 9", "5 or 9".
INT_RUN_RE = re.compile(INT + r"(?:(?:\s*[,;]\s*|\s+)(?:(?:and|or)\s+)?" + INT + r")*", re.I)
_QUOTED = re.compile(r"""(?<![A-Za-z])['"]([A-Za-z]{2,})['"](?![A-Za-z])""")
_WORD_AFTER = re.compile(r"""\bword\s*:?\s+['"]?([A-Za-z]{2,})""", re.I)

Cand = tuple[str, int, int]  # (canonical value, start, end) of one answer-like span in a text


def clean(text: str) -> str:
    """Plain quotes and dashes, single spaces, stripped."""
    return _SPACES.sub(" ", text.translate(_QUOTES)).strip()


def tokens(text: str) -> list[str]:
    """Lower-cased alphabetic tokens."""
    return [t.lower() for t in ALPHA.findall(text)]


def ints(text: str) -> list[int]:
    return [int(m) for m in INT_RE.findall(text)]


def int_runs(text: str) -> list[tuple[list[int], int, int]]:
    """Every maximal list of integers in ``text`` with its span."""
    return [([int(x) for x in INT_RE.findall(m.group(0))], m.start(), m.end()) for m in INT_RUN_RE.finditer(text)]


def longest_run(text: str, minimum: int = 2) -> list[int] | None:
    runs = [r for r, _, _ in int_runs(text)]
    best = max(runs, key=len, default=None)
    return best if best is not None and len(best) >= minimum else None


def numeric_candidates(text: str) -> list[Cand]:
    """Integers and number words (zero..twenty) in ``text``, as canonical decimal strings, in order."""
    found = [(str(int(m.group(0))), m.start(), m.end()) for m in INT_RE.finditer(text)]
    found += [(str(NUMBER_WORDS[m.group(1).lower()]), m.start(), m.end()) for m in NUMBER_WORD_RE.finditer(text)]
    return sorted(found, key=lambda c: c[1])


def digits_for_number_words(text: str) -> str:
    return NUMBER_WORD_RE.sub(lambda m: str(NUMBER_WORDS[m.group(1).lower()]), text)


def target_word(text: str) -> str | None:
    """The one content word an instruction is about, lower-cased, or None when there is not exactly one.

    Looks, in order, for a quoted word, a word after "word", then the only token (2+ letters) that is not
    instruction vocabulary.
    """
    quoted = {w.lower() for w in _QUOTED.findall(text)} - STOP
    if len(quoted) == 1:
        return quoted.pop()
    if quoted:
        return None
    for m in _WORD_AFTER.finditer(text):
        w = m.group(1).lower()
        if w not in STOP:
            return w
    rest = {t for t in tokens(text) if len(t) >= 2} - STOP
    return rest.pop() if len(rest) == 1 else None


def remove_spans(text: str, spans: list[Cand]) -> str:
    out, pos = [], 0
    for _, start, end in sorted(spans, key=lambda c: c[1]):
        if start >= pos:
            out.append(text[pos:start])
            pos = end
    out.append(text[pos:])
    return " ".join(out)


def letter_overlap(a: str, b: str) -> int:
    return sum((Counter(a) & Counter(b)).values())
