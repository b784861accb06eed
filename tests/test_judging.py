"""The judge's pure core: prompt filling, score parsing, aggregation and the consecutive-failure gate."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from srscale.judging import (
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
    ("Score: 2\nScore: 2\nScore: 2\nScore:", None),  # the final declaration is cut off: unknown
    ("Score: -", None),
    ("Score: 4/", None),  # cut off mid-fraction: could be 4/5 or 4/10
    ("Score: 4 out of", None),
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


def test_parsing_the_filled_prompt_would_not_read_the_placeholder():
    template = OmegaConf.load(CONF / "paper.yaml").template
    filled = build_judge_prompt(template, "What is 2+2?", "4")
    assert parse_score(filled) is None  # "Score: <total points>" is not a score
    assert parse_score(filled + "\nThe answer is right.\nScore: 5") == 5.0


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
