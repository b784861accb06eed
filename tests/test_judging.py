"""The judge's pure core: prompt filling, score parsing, aggregation and the consecutive-failure gate."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from srscale.judging import (
    PARSE_STATUSES,
    ConsecutiveFailureGate,
    JudgeRecord,
    aggregate,
    build_judge_prompt,
    parse_judgment,
    parse_rate,
    parse_score,
)

CONF = Path(__file__).resolve().parents[1] / "conf" / "judge"

RUBRIC = (
    "Review the user's question and the corresponding response using the additive 5-point scoring system "
    "described below. Points are accumulated based on the satisfaction of each criterion:\n"
    "- Add 1 point if the response is relevant and provides some information related to the user's inquiry"
)

# (judge output, expected score). Explicit declarations only; the last one decides; never a sentinel.
CORPUS: list[tuple[str, float | None]] = [
    # --- well-formed declarations
    ("The response is relevant and mostly complete.\nScore: 4", 4.0),
    ("score: 4", 4.0),
    ("SCORE: 2", 2.0),
    ("**Score:** 4", 4.0),
    ("**Score**: 3", 3.0),
    ("Score: **5**", 5.0),
    ("__Score__: 1", 1.0),
    ("### Score: 2", 2.0),
    ("`Score: 3`", 3.0),
    ("Score - 4", 4.0),
    ("Score — 3", 3.0),
    ("Total score: 4", 4.0),
    ("Final Score: 2", 2.0),
    ("Overall score = 5", 5.0),
    ("Score = 4", 4.0),
    ("Score：4", 4.0),  # full-width colon
    ("Score : 3", 3.0),
    ("Score:4", 4.0),
    ("Score: 4.5", 4.5),
    ("Score: 3.5", 3.5),
    ("Score: 4.", 4.0),
    ("Score: 4!", 4.0),
    ("Score: 4/5", 4.0),
    ("Score: 4 / 5", 4.0),
    ("Score: 3 out of 5", 3.0),
    ("Score: 2 points.", 2.0),
    ("Score (0-5): 3", 3.0),
    ("Score: [3]", 3.0),
    ("Score: <4>", 4.0),  # a model that copies the placeholder's brackets
    ("Score: 0", 0.0),
    ("Score: 5", 5.0),
    ("Score:\n\n3", 3.0),
    ("Score:\n1. Relevance: the response is on topic.\n2. Coverage: partial.", None),  # a list, not 1
    ("Score: 2\nScore:\n1. Relevant.\n2. Incomplete.", 2.0),
    ("4/5", 4.0),
    ("4 / 5", 4.0),
    ("I would rate this response 3/5.", 3.0),
    ("Rating (2/5): the answer misses the point.", 2.0),
    # --- several declarations: the last one wins
    ("Score: 2\nOn reflection the answer is better than I thought.\nScore: 4", 4.0),
    ("Score: 3\nScore: 3\nScore: 3\nScore: 3\nScore: 3", 3.0),  # repetition loop, complete
    ("Score: 1 Score: 2 Score: 3 Score: 4 Score: 5", 5.0),
    ("I'd say 2/5 at first. Score: 4", 4.0),
    ("Score: 3. Actually, 4/5.", 4.0),
    ("Score: 4\nScore: 10", None),  # the last declaration is invalid: an earlier one does not win
    # --- out of range or other scales: None, and "10" is never read as "1"
    ("Score: 10", None),
    ("Score: 7", None),
    ("Score: 6", None),
    ("Score: -1", None),
    ("6/5", None),
    ("10/5", None),
    ("Score: 5.5", None),
    ("Score: 8/10", None),
    ("Score: 4 out of 10", None),
    ("Score: 100", None),
    ("Score: 80%", None),
    # --- ambiguous
    ("Score: 3-4", None),
    ("Score: 3 to 4", None),
    ("Score: 4,5", None),
    # --- no declaration at all
    ("", None),
    ("   \n  ", None),
    ("I give it a 4", None),  # prose, not a declaration
    ("This deserves four points.", None),
    ("Score: four", None),
    ("The response is good.", None),
    ("Scores: 4, 3", None),
    ("The scoring system awards 5 points.", None),
    ("Score -4", None),  # a dash glued to the number is its sign, not a separator
    # --- the template's placeholder is not a score
    ('Conclude with the score using the format: "Score: <total points>"', None),
    ("Score: <total points>", None),
    ("Score: <total points>\nScore: <total points>\nScore: <total points>", None),
    ("Score: 3\nConclude with the score using the format: \"Score: <total points>\"", 3.0),
    # --- small-model failure shapes
    (RUBRIC, None),  # a rubric recital cut off mid-sentence
    (RUBRIC + "\n- Add another point if the response addresses a substantial port", None),
    ("Score:", None),  # keyword with nothing after
    ("The answer is fine.\nScore: ", None),
    ("**Score:** ", None),
    # A final dangling keyword is skipped and the earlier complete declaration is read (the issue says so;
    # this was None before).
    ("Score: 2\nScore: 2\nScore: 2\nScore:", 2.0),
    ("Score: -", None),
    # The number is complete and only the scale was cut off: 4 (was None; the judge asked for 0-5, and
    # the keyword had already declared 4).
    ("Score: 4/", 4.0),
    ("Score: 4 out of", 4.0),
    ("```python\ndef score(x):\n    return x + 1\n```", None),  # code, no declaration
    ("```python\nmax_score = 4\ntotal_score += 1\n```", None),
    ("```python\nscore = 3\n```", 3.0),  # an assignment is an explicit '=' declaration
    ("def f():\n    score == 5", None),
    ("the the the the the the the the the the the the the the", None),  # repetition loop
    ("ok " * 300, None),
    ("Score" + " " * 5000, None),  # whitespace loop after the keyword, no value
    ("User: what is 2+2?\n<response>4</response>", None),
    ("The population grew by 1/5 of its size. Score: 4", 4.0),
    ("Score: 4. Only 1/5 of the steps are explained.", 4.0),  # '1/5 of' is a quantity
    ("Published on 3/5/2024.", None),  # a date, not a fraction
    ("Score: 4 (out of 5)", 4.0),
    ("Score: 3\n\nUser: next question", 3.0),
]


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 50
    assert sum(exp is None for _, exp in CORPUS) >= 20
    assert len({text for text, _ in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize(("text", "expected"), CORPUS, ids=[f"c{i:03d}" for i in range(len(CORPUS))])
def test_parse_score_corpus(text, expected):
    got = parse_score(text)
    if expected is None:
        assert got is None
    else:
        assert got == pytest.approx(expected)
        assert isinstance(got, float)


def test_parse_score_never_returns_a_sentinel():
    for text, _ in CORPUS:
        got = parse_score(text)
        assert got is None or 0.0 <= got <= 5.0


def test_ten_is_not_read_as_one():
    assert parse_score("Score: 10") is None
    assert parse_score("Score: 10/10") is None
    assert parse_score("Score: 1") == 1.0


def test_parse_score_accepts_none():
    assert parse_score(None) is None


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Score: 4", "ok"),
        ("", "empty"),
        ("no number here", "no_declaration"),
        ("Score: 10", "out_of_range"),
        ("Score: 8/10", "wrong_scale"),
        ("Score: 3-4", "ambiguous"),
        ("Score:", "truncated"),
    ],
)
def test_parse_judgment_reports_why(text, status):
    result = parse_judgment(text)
    assert result.status == status
    assert (result.score is not None) == (status == "ok")


def test_parse_judgment_span_points_at_the_last_declaration():
    text = "Score: 2\nthen\nScore: 5"
    result = parse_judgment(text)
    start, end = result.span
    assert text[start:end] == "Score: 5"


# ------------------------------------------------------------ shapes a careful human reads (issue item 9)
# (judge output, expected score, expected status). Each shape named in the issue, and its neighbours.
SHAPES: list[tuple[str, float | None, str]] = [
    # --- numbers that are not plain decimals: not clearly a 0-5 score, so the declaration is malformed
    ("Score: 1e1", None, "malformed"),  # was read as 1
    ("Score: 4e0", None, "malformed"),
    ("Score: 1E1", None, "malformed"),
    ("Score: 0x4", None, "malformed"),  # was read as 0
    ("Score: 0b11", None, "malformed"),
    ("Score: 4th", None, "malformed"),
    ("Score: 4.5.1", None, "malformed"),
    ("Score: 4:30", None, "malformed"),
    ("Score: +4", None, "malformed"),
    ("Score: 4/5/2024", None, "malformed"),  # a date after the keyword
    ("Score: 4-5-2024", None, "malformed"),
    ("Score: 4/5th", None, "malformed"),
    ("Score: 4/ good", None, "malformed"),  # a slash with no scale, not at the end
    ("Score: 4\nScore: 0x4", None, "malformed"),  # the last declaration decides, even when malformed
    ("Score: 4%", None, "wrong_scale"),  # a percentage is another scale (was read as 4)
    ("Score: 80%", None, "wrong_scale"),
    ("Score: 4 (out of 10)", None, "wrong_scale"),
    ("Score: 4 out of ten", None, "wrong_scale"),
    ("Score: 4 out of five", 4.0, "ok"),
    ("Score: 4 of 5", 4.0, "ok"),
    ("Score: 4pts", 4.0, "ok"),
    ("Score: .5", 0.5, "ok"),
    ('Score: "4"', 4.0, "ok"),
    ("Score: 3 or 4", None, "ambiguous"),
    ("Score: 4, 5", None, "ambiguous"),
    ("Score: 4 1/2", None, "ambiguous"),  # a mixed number or two numbers: not read
    ("Score: 3 – 4", None, "ambiguous"),
    ("Score: -0", None, "out_of_range"),  # a sign: not a plain score
    ("Score: −1", None, "out_of_range"),  # U+2212 minus
    ("Score: 4,", 4.0, "ok"),
    ("Score: 4 - the response is accurate", 4.0, "ok"),  # a spaced dash before prose is not a range
    ("Score: 4 (3 + 1)", 4.0, "ok"),
    ("Score: ４", 4.0, "ok"),  # full-width digit
    # --- unicode vulgar fractions, read exactly
    ("Score: 4½", 4.5, "ok"),  # was read as 4
    ("Score: 4 ½", 4.5, "ok"),
    ("Score: 3¼/5", 3.25, "ok"),
    ("Score: ½", 0.5, "ok"),
    ("Score: 3⅓", 10 / 3, "ok"),
    ("Score: 5½", None, "out_of_range"),
    ("Score: 4.5½", None, "malformed"),
    ("I rate it 4½/5.", 4.5, "ok"),
    # --- truncation at the very end
    ("Score: 4/", 4.0, "ok"),  # number complete, "/5" cut
    ("Score: 4 /", 4.0, "ok"),
    ("Score: 4 out of", 4.0, "ok"),
    ("Score: 4 out", 4.0, "ok"),
    ("**Score:** 4/**", 4.0, "ok"),
    ("Score: 7/", None, "out_of_range"),
    ("Score: 4 to", None, "truncated"),  # a range cut
    ("Score: 3-", None, "truncated"),
    ("Score: 3 -", None, "truncated"),
    ("Score: 3 or", None, "truncated"),
    ("Score: 5\nScore: 4 to", None, "truncated"),  # a cut last declaration: an earlier one does not win
    ("Score: -", None, "truncated"),
    ("Score: 4/1", None, "ambiguous"),  # maybe "4/10" cut off
    ("Score: 4/1.", None, "wrong_scale"),  # complete: the scale is 1
    ("Score: 3\nI'd say 4/", None, "truncated"),  # a bare fraction cut: its scale is what made it one
    ("Score: 3\nI'd say 4 out of", None, "truncated"),
    ("Score: 4\nScore:", 4.0, "ok"),  # a final dangling keyword: the earlier declaration is read
    ("Score: 4\n**Score:** ", 4.0, "ok"),
    ("Score: 4\nScore: [", 4.0, "ok"),
    ("Score: 10\nScore:", None, "out_of_range"),  # ... and an invalid earlier one still gives None
    ("Score: 4\nScore: 10", None, "out_of_range"),  # a final complete invalid declaration
    ("The answer is fine.\nScore: ", None, "truncated"),  # dangling with nothing before
    # --- negations, counterfactuals, comparisons, conditions, questions: mentions, not declarations
    ("Score: 4. It does not deserve a 5/5.", 4.0, "ok"),
    ("It does not deserve a 5/5.", None, "no_declaration"),
    ("Score: 3\nIt would have been Score: 5 if it had cited its sources.", 3.0, "ok"),
    ("Score: 3\nThis is not a 5/5.", 3.0, "ok"),
    ("Score: 4 (not 5/5)", 4.0, "ok"),
    ("I chose 4/5 rather than 5/5.", 4.0, "ok"),
    ("Score: 4\nI would not give it Score: 5", 4.0, "ok"),
    ("Score: 4\nIt doesn't reach 5/5.", 4.0, "ok"),
    ("Score: 3\nIt is never a 5/5 answer.", 3.0, "ok"),
    ("Score: 2\nIt is better than a 1/5.", 2.0, "ok"),
    ("Score: 3\nUp from 2/5 in the draft.", 3.0, "ok"),
    ("Score: 4\nA higher score than 4/5 is not warranted.", 4.0, "ok"),
    ("Score: 4\nIt would be a 5/5 if it had examples.", 4.0, "ok"),
    ("Score: 4\nHad it cited sources, it would get 5/5.", 4.0, "ok"),
    ("Score: 4\nIf it cited sources it would earn Score: 5", 4.0, "ok"),
    ("Score: 2\nWhether it deserves 4/5 is debatable.", 2.0, "ok"),
    ("Score: 4. Is this a 5/5? No.", 4.0, "ok"),
    ("Score: 4\nDoes the response deserve a 5/5 given the missing date?", 4.0, "ok"),
    ("It does not deserve a 5/5. Score: 4", 4.0, "ok"),  # positive declarations after a mention count
    ("It does not deserve a 5/5.\nScore: 4", 4.0, "ok"),
    ("Not bad! Score: 4", 4.0, "ok"),
    ("While not perfect, it earns 4/5.", 4.0, "ok"),
    ("Not perfect but a solid 4/5", 4.0, "ok"),
    ("The response has no errors and gets Score: 5", 5.0, "ok"),
    ("It doesn't contain errors, so Score: 5", 5.0, "ok"),
    ("There is no doubt it deserves 5/5.", 5.0, "ok"),
    ("Even if it is short, Score: 4", 4.0, "ok"),
    ("If I had to give a score, it would be 4/5.", 4.0, "ok"),
    ("It would be a 4/5.", 4.0, "ok"),
    ("I would rate this response 3/5.", 3.0, "ok"),
    ("I would have to say Score: 3", 3.0, "ok"),  # an obligation, not a counterfactual
    ("Score: 4 — what more could one want?", 4.0, "ok"),  # a question after the declaration's clause
    ("Score: 4, not 5", 4.0, "ok"),
    # --- quoted format examples
    ('Score: 4\nConclude with the score using the format, for example "Score: 3"', 4.0, "ok"),
    ('Score: 4\nfor example "Score: 3"', 4.0, "ok"),
    ("Score: 4\ne.g. Score: 2", 4.0, "ok"),
    ("Score: 4\ne.g., Score: 2", 4.0, "ok"),
    ("Score: 4\nFor instance, a perfect answer gets Score: 5", 4.0, "ok"),
    ("Score: 4\nScores such as 5/5 are rare.", 4.0, "ok"),
    ('Score: 4\nUse the format "Score: 3" at the end.', 4.0, "ok"),
    ("Score: 4\nthe format `Score: 3`", 4.0, "ok"),
    ('Score: 4\nsomething like "Score: 2"', 4.0, "ok"),
    ('Score: 2\nfor example "Score: 3" or "Score: 4"', 2.0, "ok"),  # a list of examples
    ('Conclude with the score using the format: "Score: 3"', None, "no_declaration"),
    ('Score: 4\nthe format "Score: <total points>"', 4.0, "ok"),
    ('The answer is right and complete.\n"Score: 4"', 4.0, "ok"),  # quoted, nothing marks an example
    ('The response is accurate. "Score: 4"', 4.0, "ok"),
    ("`Score: 3`", 3.0, "ok"),
    ("Good format, Score: 4", 4.0, "ok"),  # "format" without quotes is not an example cue
    ("For example, the answer omits the date, so Score: 3", 3.0, "ok"),
    # --- hallucinated next turns: only the text before the first one is read
    ("Score: 3\nUser: What is 3+3?\nScore: 5", 3.0, "ok"),
    ("Score: 3\n\nHuman: thanks\nScore: 5", 3.0, "ok"),
    ("Score: 3\n### User\nScore: 5", 3.0, "ok"),
    ("Score: 3\n### Instruction:\nWrite a poem.\nScore: 5", 3.0, "ok"),
    ("Score: 3\n**User:** hi\nScore: 5", 3.0, "ok"),
    ("Score: 3\n[User]: hi\nScore: 5", 3.0, "ok"),
    ("Score: 3\n<|user|>\nhi\nScore: 5", 3.0, "ok"),
    ("Score: 3<|im_end|>\n<|im_start|>user\nScore: 5", 3.0, "ok"),
    ("Score: 3</s>Score: 5", 3.0, "ok"),
    ("Score: 3 [INST] next [/INST] Score: 5", 3.0, "ok"),
    ("Score: 3\nQuestion: What is the capital of France?\nAnswer: Paris\nScore: 5", 3.0, "ok"),
    ("Score: 3\nInstruction: Summarise the text.\nScore: 5", 3.0, "ok"),
    ("Score: 3\nReview the user's question and the corresponding response using the additive 5-point "
     "scoring system.\nScore: 5", 3.0, "ok"),
    ("Score: 3\nAfter examining the user's instruction and the response:\nScore: 5", 3.0, "ok"),
    ("Score: 3\nUser: What is 3+3?\nScore: 10", 3.0, "ok"),  # an invalid one after the cut does not count
    ("The answer is right.\nUser: What is 3+3?\nScore: 5", None, "hallucinated_turn"),
    ("User: what is 2+2?\nScore: 5", None, "hallucinated_turn"),
    ("Score:\nUser: what is 2+2?\nScore: 5", None, "hallucinated_turn"),  # dangling, then a new turn
    ("Score: 4/\n\nUser: hi\nScore: 5", 4.0, "ok"),  # the end of the judgment is where the turn starts
    ("Score: 4 to\nUser: hi\nScore: 5", None, "truncated"),
    ("The user: asks for a poem. Score: 4", 4.0, "ok"),  # "user:" mid-line opens no turn
    ("The answer addresses the user's question well.\nScore: 4", 4.0, "ok"),
]


def test_shapes_are_unique_and_cover_every_status():
    assert len({text for text, _, _ in SHAPES}) == len(SHAPES)
    assert {status for _, _, status in SHAPES} == set(PARSE_STATUSES) - {"empty"}


@pytest.mark.parametrize(("text", "expected", "status"), SHAPES,
                         ids=[f"s{i:03d}" for i in range(len(SHAPES))])
def test_shapes(text, expected, status):
    result = parse_judgment(text)
    assert result.status == status
    if expected is None:
        assert result.score is None
    else:
        assert result.score == pytest.approx(expected)
        assert isinstance(result.score, float)
    assert parse_score(text) == result.score


def test_vulgar_fractions_are_exact():
    assert parse_score("Score: 3⅓") == float(Fraction(10, 3))
    assert parse_score("Score: 2⅝") == 2.625
    assert parse_score("Score: 0¼") == 0.25


@pytest.mark.parametrize(
    ("text", "declared"),
    [
        ("Score: 3\nIt does not deserve a 5/5.", "Score: 3"),
        ("Score: 2\nScore: 4 out of 5, not a 5/5", "Score: 4 out of 5"),
        ("Score: 4/\n\nUser: hi", "Score: 4/"),
        ("**Final Score: 3.5/5**", "Score: 3.5/5"),
        ("I rate it 4½/5.", "4½/5"),
        ("Score: 4\nScore:", "Score: 4"),
    ],
)
def test_span_points_at_the_deciding_declaration(text, declared):
    start, end = parse_judgment(text).span
    assert text[start:end] == declared


def test_turn_cut_is_reported_and_nothing_after_it_is_read():
    text = "The answer is right.\nScore: 4\n\nUser: And 3+3?\nScore: 1"
    result = parse_judgment(text)
    assert result.turn_cut == text.index("User:")
    assert result.score == 4.0 and result.span[1] <= result.turn_cut
    assert parse_judgment("Score: 4").turn_cut is None


# ------------------------------------------------------------------------ properties of the parser
TURNS = [
    "\nUser: What is the capital of France?\nScore: 5",
    "\n\n### Human\nthanks!\nScore: 0",
    "\nReview the user's question and the corresponding response using the additive 5-point scoring "
    "system described below.\nScore: 1/5",
    "<|im_end|>\n<|im_start|>user\nScore: 2",
    "\nQuestion: 2+2?\n4/5",
    "\nInstruction: Score: 10",
]


@pytest.mark.parametrize("turn", TURNS)
def test_appending_a_hallucinated_turn_never_changes_the_score(turn):
    for text in [t for t, _ in CORPUS] + [t for t, _, _ in SHAPES]:
        if not text.strip():
            continue
        result = parse_judgment(text + turn)
        assert result.score == parse_score(text), text
        assert result.turn_cut is not None


WRAPPED = ["Score: {v}", "**Score:** {v}", "**Score: {v}**", "Score: **{v}**", "__Score__: {v}",
           "### Score: {v}", "`Score: {v}`", '"Score: {v}"', "> Score: {v}", "- **Score**: {v}/5",
           "Total score: {v} out of 5", "**Final Score:** {v}/5", "Score: [{v}]", "Score: <{v}>",
           "Score (0-5): {v}", "Score = {v}", "Score:\n\n{v}", "Score: {v}.", "Score: {v} points"]
JUSTIFICATIONS = ["", "The response is relevant.\n", "It does not deserve a 5/5, but it is close.\n",
                  'The rubric asks for the format "Score: <total points>".\n', "Score: 1\nOn reflection:\n",
                  "e.g. Score: 2 would be too harsh.\n", "It would have been a 5/5 with sources.\n"]


@pytest.mark.parametrize("wrapper", WRAPPED)
def test_a_valid_final_declaration_keeps_its_value_in_any_markup(wrapper):
    for value in [0, 1, 2.5, 3, 4.5, 5]:
        for before in JUSTIFICATIONS:
            text = before + wrapper.format(v=value)
            assert parse_score(text) == float(value), text


MENTIONS = [
    "It does not deserve a 5/5.",
    "It would have been Score: 5 if it had cited sources.",
    "This is not a 5/5.",
    "I chose it rather than 1/5.",
    "I would not give it Score: 5.",
    'The rubric wants the format "Score: 3".',
    "For example: Score: 2.",
    "e.g. Score: 1 is too harsh.",
    "Is this a 5/5?",
    "It would be a 5/5 if it had examples.",
]


@pytest.mark.parametrize("mention", MENTIONS)
def test_a_mention_declares_nothing_and_never_overrides_a_declaration(mention):
    assert parse_judgment(mention).status == "no_declaration"
    assert parse_score(f"Score: 3\n{mention}") == 3.0
    assert parse_score(f"Score: 3. {mention}") == 3.0
    assert parse_score(f"{mention}\nScore: 4") == 4.0
    assert parse_score(f"{mention} Score: 4") == 4.0


def test_real_prose_followed_by_a_declaration_reads_the_declaration(shared_data):
    """4,454 real responses (AlpacaEval references, Alpaca-7B, OASST2) as judgment bodies: the appended
    declaration is read, unless the prose itself opened a new turn (then nothing after it is)."""
    texts = []
    for model in ["gpt4_1106_preview", "alpaca-7b"]:
        rows = json.loads((shared_data / "alpaca_eval/results" / model / "model_outputs.json").read_text())
        texts += [r["output"] for r in rows]
    with open(shared_data / "oasst2_eft/oasst2_evaluation_fine_tuning.jsonl") as f:
        texts += [json.loads(line)["response_text"] for line in f]
    assert len(texts) > 4000
    cut = 0
    for text in texts:
        alone = parse_judgment(text)
        judged = parse_judgment(text + "\nScore: 3")
        if alone.turn_cut is None:
            assert judged.score == 3.0, text[-300:]
        else:
            cut += 1
            assert judged.score == alone.score and judged.turn_cut == alone.turn_cut
    assert cut < len(texts) / 100  # real prose rarely looks like a new turn


# Inputs of ~200k characters that a quadratic parser would not finish (no timing assertion: a
# regression shows as a hang).
N_ADVERSARIAL = 200_000


def _repeat(piece):
    return piece * (N_ADVERSARIAL // len(piece) + 1)


def _random_text(pieces, seed):
    rng = random.Random(seed)
    out, size = [], 0
    while size < N_ADVERSARIAL:
        out.append(rng.choice(pieces))
        size += len(out[-1])
    return "".join(out)


ADVERSARIAL = {
    "keywords": (_repeat("Score"), "no_declaration"),
    "heads": (_repeat("Score: "), "truncated"),
    "bold heads": (_repeat("**Score:** "), "truncated"),
    "keyword then spaces": ("Score" + " " * N_ADVERSARIAL, "no_declaration"),
    "head then spaces": ("Score:" + " " * N_ADVERSARIAL, "truncated"),
    "head then spaces then 4": ("Score:" + " " * N_ADVERSARIAL + "4", "ok"),
    "digits": ("1" * N_ADVERSARIAL, "no_declaration"),
    "slashes": ("/" * N_ADVERSARIAL, "no_declaration"),
    "stars": ("*" * N_ADVERSARIAL, "no_declaration"),
    "newlines then a score": ("\n" * N_ADVERSARIAL + "Score: 4", "ok"),
    "number then spaces then to": ("Score: 4" + " " * N_ADVERSARIAL + "to", "truncated"),
    "digit slash": (_repeat("1/"), "no_declaration"),
    "fractions": (_repeat("1/5 "), "ok"),
    "numbers": (_repeat("4 "), "no_declaration"),
    "negated fractions": (_repeat("it does not deserve a 5/5 "), "no_declaration"),
    "examples": (_repeat("e.g. Score: 3 "), "no_declaration"),
    "list items": (_repeat("Score:\n1. a\n"), "no_declaration"),
    "cut ranges": (_repeat("Score: 4 to "), "truncated"),
    "dates": (_repeat("Score: 4/5/2024 "), "malformed"),
    "turn markers": (_repeat("User:"), "hallucinated_turn"),
    "random symbols": (_random_text(["Score", " ", "1", "5", "/", "*", "\n", ":", "-", "."], 0), None),
    "random words": (
        _random_text(["score", ": ", "4", "/5", "**", "\n", " not ", " if ", "e.g. ", '"', "?"], 1), None),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_inputs_finish(name):
    text, status = ADVERSARIAL[name]
    result = parse_judgment(text)
    assert len(text) >= N_ADVERSARIAL
    assert result.status in PARSE_STATUSES
    if status is not None:
        assert result.status == status


@pytest.mark.parametrize("name", ["paper", "short"])
def test_parsing_the_filled_prompt_would_not_read_the_placeholder(name):
    template = OmegaConf.load(CONF / f"{name}.yaml").template
    filled = build_judge_prompt(template, "What is 2+2?", "4")
    assert parse_score(filled) is None  # "Score: <total points>" is not a score
    # The template's opening line is a turn marker, so even a completion glued to the decoded prompt is
    # not read (the paper template used to give 5 here; only generated text is ever parsed anyway).
    result = parse_judgment(filled + "\nThe answer is right.\nScore: 5")
    assert (result.score, result.status, result.turn_cut) == (None, "hallucinated_turn", 0)
    # A judgment that goes on to recite the template keeps the score it declared before.
    assert parse_score("The answer is right.\nScore: 5\n\n" + filled + "\nScore: 1") == 5.0


@pytest.mark.parametrize("name", ["paper", "short"])
def test_build_judge_prompt_fills_the_shipped_templates(name):
    template = OmegaConf.load(CONF / f"{name}.yaml").template
    out = build_judge_prompt(template, "Name a prime {number}.", "7 is prime; {x} stays.")
    assert "Name a prime {number}." in out
    assert "7 is prime; {x} stays." in out
    assert "{prompt}" not in out and "{response}" not in out
    assert 'Score: <total points>' in out


def test_build_judge_prompt_uses_replace_not_format():
    template = "Q: {prompt}\nA: {response}\nJSON: {\"score\": n}"
    out = build_judge_prompt(template, "p", "r")
    assert out == "Q: p\nA: r\nJSON: {\"score\": n}"


def test_build_judge_prompt_does_not_refill_inserted_text():
    out = build_judge_prompt("{prompt} || {response}", "asks about {response}", "quotes {prompt}")
    assert out == "asks about {response} || quotes {prompt}"


def test_build_judge_prompt_requires_both_slots():
    with pytest.raises(ValueError, match="response"):
        build_judge_prompt("only {prompt}", "p", "r")


# ------------------------------------------------------------------------------ aggregation
def test_aggregate_means_the_valid_scores():
    assert aggregate([4.0, None, 2.0]) == 3.0
    assert aggregate([None, None]) is None
    assert aggregate([]) is None
    assert aggregate([float("nan"), 5.0]) == 5.0
    assert aggregate([0.0]) == 0.0  # a real zero is a score, not a failure


def test_parse_rate():
    assert parse_rate([1.0, None, 3.0, None]) == 0.5
    assert parse_rate([]) is None


def test_judge_record_parses_its_text():
    rec = JudgeRecord.from_text("p1", 2, 0, "Score: 3")
    assert rec.score == 3.0
    assert rec.to_dict() == {"prompt_id": "p1", "candidate_id": 2, "sample": 0, "text": "Score: 3",
                             "score": 3.0}
    assert JudgeRecord.from_text("p1", 2, 1, "Score: 10").score is None


# ------------------------------------------------------------------------------------ gate
def test_gate_ten_failures_do_not_trip_the_eleventh_does():
    gate = ConsecutiveFailureGate()
    assert gate.max_consecutive == 10
    for _ in range(10):
        assert gate.update(False) is False
    assert gate.current_streak == 10 and not gate.tripped
    assert gate.update(False) is True
    assert gate.tripped and gate.tripped_at == 11


def test_gate_success_resets_the_streak():
    gate = ConsecutiveFailureGate(3)
    for ok in [False, False, False, True, False, False, False]:
        assert gate.update(ok) is False
    assert gate.current_streak == 3
    assert gate.longest_streak == 3
    assert gate.update(False) is True
    assert gate.tripped_at == 8


def test_gate_zero_trips_on_first_failure():
    gate = ConsecutiveFailureGate(0)
    assert gate.update(True) is False
    assert gate.update(False) is True
    assert gate.tripped_at == 2


def test_gate_stays_tripped_and_keeps_counting():
    gate = ConsecutiveFailureGate(1)
    gate.update(False)
    assert gate.update(False) is True
    assert gate.update(True) is True
    assert gate.update(True) is True
    assert gate.tripped_at == 2
    assert gate.current_streak == 0
    assert (gate.failures, gate.successes, gate.total) == (2, 2, 4)


def test_gate_counters_and_to_dict():
    gate = ConsecutiveFailureGate(5)
    for ok in [True, False, False, True, False, True, True]:
        gate.update(ok)
    d = gate.to_dict()
    assert d == {
        "max_consecutive": 5,
        "tripped": False,
        "tripped_at": None,
        "current_streak": 0,
        "longest_streak": 2,
        "failures": 3,
        "successes": 4,
        "total": 7,
        "parse_rate": pytest.approx(4 / 7),
    }


def test_gate_fresh_state():
    d = ConsecutiveFailureGate().to_dict()
    assert d["total"] == 0 and d["parse_rate"] is None and d["tripped_at"] is None


def test_gate_update_scores_treats_none_and_nan_as_failures():
    gate = ConsecutiveFailureGate(2)
    assert gate.update_scores([4.0, None, float("nan")]) is False
    assert gate.update_scores([None]) is True
    assert gate.tripped_at == 4


def test_gate_fed_from_parsed_corpus():
    gate = ConsecutiveFailureGate(10)
    texts = ["Score: <total points>"] * 10 + ["Score: 4"] + ["Score: 10"] * 10
    assert gate.update_scores(parse_score(t) for t in texts) is False
    assert gate.longest_streak == 10
    assert gate.update(parse_score("Score:") is not None) is True


@pytest.mark.parametrize("bad", [-1, 1.5, "3", None, True])
def test_gate_rejects_bad_thresholds(bad):
    with pytest.raises(ValueError):
        ConsecutiveFailureGate(bad)


def test_nan_is_not_a_score():
    assert math.isnan(float("nan"))
    assert aggregate([float("nan")]) is None
