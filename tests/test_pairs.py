"""Preference pairs from self-judged candidates: failed parses never become scores."""

from __future__ import annotations

import random

import pytest

from srscale.pairs import Candidate, Pair, PromptCandidates, build_pairs, score_histogram


def item(prompt: str, *cands: tuple[str, list[float | None]], prompt_id: str | None = None):
    return PromptCandidates(prompt, [Candidate(t, list(s)) for t, s in cands], prompt_id=prompt_id)


def test_max_min_picks_highest_and_lowest_mean():
    pairs, stats = build_pairs([item("p", ("a", [3, 3, 3]), ("b", [5, 4, None]), ("c", [1, None, 2]),
                                     ("d", [2, 2, 2]))])
    assert len(pairs) == 1
    p = pairs[0]
    assert (p.prompt, p.chosen, p.rejected) == ("p", "b", "c")
    assert p.chosen_score == 4.5 and p.rejected_score == 1.5 and p.margin == 3.0
    assert stats.pairs == 1 and stats.ties == 0 and stats.excluded_candidates == 0


def test_failed_candidate_is_never_chosen_or_rejected():
    # A candidate whose judgments all failed must not become the "rejected" one (the -1 sentinel bug).
    pairs, stats = build_pairs([item("p", ("failed", [None, None, None]), ("good", [5]), ("ok", [3]))])
    assert pairs[0].chosen == "good" and pairs[0].rejected == "ok"
    assert stats.excluded_candidates == 1
    for p in pairs:
        assert "failed" not in (p.chosen, p.rejected)


def test_tie_is_dropped_and_counted():
    pairs, stats = build_pairs([item("p", ("a", [4, 4]), ("b", [4]), ("c", [None, 4]))])
    assert pairs == []
    assert stats.ties == 1 and stats.pairs == 0 and stats.prompts == 1


def test_too_few_valid_and_all_failed():
    items = [
        item("one-valid", ("a", [3]), ("b", [None, None])),
        item("none-valid", ("a", [None]), ("b", [None, None])),
        item("fine", ("a", [1]), ("b", [2])),
    ]
    pairs, stats = build_pairs(items)
    assert [p.prompt for p in pairs] == ["fine"]
    assert stats.too_few_valid == 2
    assert stats.all_failed == 1
    assert stats.excluded_candidates == 3
    assert stats.candidates == 6
    assert stats.prompts == stats.pairs + stats.ties + stats.too_few_valid


def test_zero_is_a_real_score():
    pairs, _ = build_pairs([item("p", ("zero", [0.0]), ("fail", [None]), ("two", [2.0]))])
    assert pairs[0].rejected == "zero" and pairs[0].rejected_score == 0.0


def test_nan_scores_are_failures():
    pairs, stats = build_pairs([item("p", ("nan", [float("nan")]), ("a", [1.0]), ("b", [3.0]))])
    assert (pairs[0].chosen, pairs[0].rejected) == ("b", "a")
    assert stats.excluded_candidates == 1


def test_equal_maxima_break_to_the_first_index():
    pairs, _ = build_pairs([item("p", ("x", [1]), ("first-max", [5]), ("second-max", [5]), ("y", [1]))])
    assert pairs[0].chosen == "first-max"
    assert pairs[0].rejected == "x"


def test_max_random_rejects_a_strictly_lower_candidate_deterministically():
    it = item("p", ("best", [5]), ("also-best", [5]), ("a", [1]), ("b", [2]), ("c", [3]), ("fail", [None]))
    seen = set()
    for seed in range(30):
        pairs, _ = build_pairs([it], strategy="max_random", rng=seed)
        p = pairs[0]
        assert p.chosen == "best"
        assert p.rejected in {"a", "b", "c"}
        seen.add(p.rejected)
        again, _ = build_pairs([it], strategy="max_random", rng=random.Random(seed))
        assert again == pairs
    assert seen == {"a", "b", "c"}


def test_max_random_tie_when_nothing_lower():
    pairs, stats = build_pairs([item("p", ("a", [3]), ("b", [3]))], strategy="max_random", rng=0)
    assert pairs == [] and stats.ties == 1


def test_stats_lengths_and_margin():
    items = [item("p1", ("aaaa", [5]), ("bb", [1])), item("p2", ("cccccc", [4]), ("dddd", [2]))]
    pairs, stats = build_pairs(items)
    assert stats.mean_chosen_len == 5.0
    assert stats.mean_rejected_len == 3.0
    assert stats.mean_margin == 3.0
    d = stats.to_dict()
    assert d["pairs"] == 2 and d["prompts"] == 2


def test_empty_input_and_no_pairs_gives_none_means():
    pairs, stats = build_pairs([])
    assert pairs == [] and stats.prompts == 0 and stats.mean_chosen_len is None


def test_dict_input_and_prompt_id():
    raw = {"prompt": "p", "prompt_id": "id7",
           "candidates": [{"text": "a", "scores": [1, None]}, {"text": "b", "scores": [4]}]}
    pairs, _ = build_pairs([raw])
    assert pairs[0] == Pair(prompt="p", chosen="b", rejected="a", chosen_score=4.0, rejected_score=1.0,
                            margin=3.0, prompt_id="id7")
    assert pairs[0].to_dict()["prompt_id"] == "id7"


def test_unknown_strategy():
    with pytest.raises(ValueError, match="max_min"):
        build_pairs([], strategy="best_worst")


def test_candidate_score_property():
    assert Candidate("t", [None, 2, 4]).score == 3.0
    assert Candidate("t", [None]).score is None
    assert Candidate("t").score is None


def test_score_histogram():
    h = score_histogram([4.0, 3.5, None, 4, 0.0, float("nan")])
    assert h == {"0": 1, "3.5": 1, "4": 2, "none": 2}
    assert list(h)[:3] == ["0", "3.5", "4"]


def test_identical_candidates_are_one_response_with_pooled_samples():
    # "5." judged 5 then 1 is one response with mean 3, not a pair of itself.
    pairs, stats = build_pairs([item("p", ("5.", [5]), ("5.", [1]), ("six", [2]))])
    assert len(pairs) == 1 and (pairs[0].chosen, pairs[0].rejected) == ("5.", "six")
    assert pairs[0].chosen_score == 3.0 and stats.duplicates_merged == 1 and stats.candidates == 3


def test_a_prompt_whose_candidates_are_all_the_same_text_gives_no_pair():
    pairs, stats = build_pairs([item("p", ("same", [5, 4]), ("same", [0]), ("same", [None]))])
    assert pairs == [] and stats.too_few_valid == 1 and stats.duplicates_merged == 2
    assert stats.prompts == stats.pairs + stats.ties + stats.too_few_valid


def test_merging_does_not_touch_the_inputs():
    a, b = Candidate("x", [1.0]), Candidate("x", [3.0])
    build_pairs([PromptCandidates("p", [a, b, Candidate("y", [5.0])])])
    assert a.scores == [1.0] and b.scores == [3.0]
