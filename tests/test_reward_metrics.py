"""Reward-model metrics (paper Table 4) on small hand-computed cases."""

from __future__ import annotations

import math
import random
import warnings
from itertools import combinations

import pytest
from scipy.stats import kendalltau, spearmanr

from srscale.evaluation.reward_metrics import pairwise_chance, reward_model_metrics


def no_nan(metrics: dict) -> None:
    for key, value in metrics.items():
        assert not (isinstance(value, float) and math.isnan(value)), key


def test_perfect_ranking_is_one_everywhere():
    m = reward_model_metrics([{"gold": [1, 2, 3, 4], "pred": [1, 2, 3, 5]},
                              {"gold": [0, 10], "pred": [2, 4]}])
    assert m["pairwise_accuracy"] == 1.0 and m["n_pairs"] == 7
    assert m["exact_match"] == 1.0 and m["n_exact_match_items"] == 2
    assert m["spearman_per_prompt"] == pytest.approx(1.0)
    assert m["kendall_per_prompt"] == pytest.approx(1.0)
    assert m["n_corr_items"] == 2
    assert m["five_best"] == 1.0 and m["n_five"] == 1
    assert m["parse_rate"] == 1.0 and m["n_items"] == 2 and m["n_responses"] == 6


def test_reversed_ranking():
    m = reward_model_metrics([{"gold": [1, 2, 3], "pred": [3, 2, 1]}])
    assert m["pairwise_accuracy"] == 0.0
    assert m["exact_match"] == 0.0
    assert m["spearman_per_prompt"] == pytest.approx(-1.0)
    assert m["kendall_per_prompt"] == pytest.approx(-1.0)
    assert m["spearman_pooled"] == pytest.approx(-1.0)
    assert m["five_best"] is None and m["n_five"] == 0


def test_invalid_predictions_lower_parse_rate_and_are_skipped():
    m = reward_model_metrics([{"gold": [1, 2, 3], "pred": [1, None, 3]}])
    assert m["parse_rate"] == pytest.approx(2 / 3)
    assert m["n_valid"] == 2
    assert m["n_pairs"] == 1 and m["pairwise_accuracy"] == 1.0  # only the (1, 3) pair
    assert m["exact_match"] is None and m["n_exact_match_items"] == 0  # not all predictions valid
    assert m["spearman_per_prompt"] == pytest.approx(1.0)


def test_nan_prediction_is_invalid():
    m = reward_model_metrics([{"gold": [1, 2], "pred": [float("nan"), 4]}])
    assert m["parse_rate"] == 0.5 and m["n_pairs"] == 0 and m["pairwise_accuracy"] is None
    no_nan(m)


def test_prediction_tie_counts_as_wrong():
    m = reward_model_metrics([{"gold": [1, 2, 3], "pred": [2, 2, 3]}])
    assert m["pairwise_accuracy"] == pytest.approx(2 / 3)
    assert m["exact_match"] == 0.0
    assert m["spearman_per_prompt"] == pytest.approx(spearmanr([1, 2, 3], [2, 2, 3])[0])
    assert m["kendall_per_prompt"] == pytest.approx(kendalltau([1, 2, 3], [2, 2, 3])[0])


def test_gold_ties_are_not_pairs_and_exact_match_is_a_weak_order():
    m = reward_model_metrics([{"gold": [2, 2, 5], "pred": [1, 1, 4]}])
    assert m["n_pairs"] == 2 and m["pairwise_accuracy"] == 1.0
    assert m["exact_match"] == 1.0
    m = reward_model_metrics([{"gold": [2, 2, 5], "pred": [1, 2, 4]}])
    assert m["pairwise_accuracy"] == 1.0
    assert m["exact_match"] == 0.0  # the prediction separates what gold ties


def test_per_prompt_mean_and_pooled_differ():
    items = [{"gold": [1, 2, 3], "pred": [1, 2, 3]}, {"gold": [1, 2, 3], "pred": [5, 4, 3]}]
    m = reward_model_metrics(items)
    assert m["spearman_per_prompt"] == pytest.approx(0.0)
    assert m["kendall_per_prompt"] == pytest.approx(0.0)
    gold, pred = [1, 2, 3, 1, 2, 3], [1, 2, 3, 5, 4, 3]
    assert m["spearman_pooled"] == pytest.approx(spearmanr(gold, pred)[0])
    assert m["kendall_pooled"] == pytest.approx(kendalltau(gold, pred)[0])
    assert m["pairwise_accuracy"] == 0.5 and m["exact_match"] == 0.5


def test_undefined_correlations_are_none_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = reward_model_metrics([{"gold": [1, 2, 3], "pred": [4, 4, 4]}, {"gold": [3, 3], "pred": [1, 2]},
                                  {"gold": [1], "pred": [5]}])
    assert m["spearman_per_prompt"] is None and m["kendall_per_prompt"] is None
    assert m["n_corr_items"] == 0
    no_nan(m)


def test_all_predictions_failed():
    m = reward_model_metrics([{"gold": [1, 2, 3], "pred": [None, None, None]}])
    assert m["parse_rate"] == 0.0
    for key in ("pairwise_accuracy", "exact_match", "five_best", "spearman_per_prompt", "kendall_per_prompt",
                "spearman_pooled", "kendall_pooled"):
        assert m[key] is None, key
    no_nan(m)


def test_empty_input():
    m = reward_model_metrics([])
    assert m["n_items"] == 0 and m["parse_rate"] is None and m["pairwise_accuracy"] is None
    no_nan(m)


def test_five_best_threshold_and_shared_top():
    items = [
        {"gold": [1, 3, 3], "pred": [2, 5, 4.5]},  # both "5"s are a (shared) gold best
        {"gold": [3, 1], "pred": [4.4, 5]},  # 4.4 is not a 5; the 5 went to the worse response
    ]
    m = reward_model_metrics(items)
    assert m["n_five"] == 3
    assert m["five_best"] == pytest.approx(2 / 3)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="item 0"):
        reward_model_metrics([{"gold": [1, 2], "pred": [1]}])


# ------------------------------------------------------------------------------------------ chance level
def _brute_force_chance(items):
    """Mean over every assignment of each prompt's predictions to its responses (all permutations)."""
    from itertools import permutations, product

    per_item = [list(permutations(p)) for _, p in items]
    total = sum(sum(g[a] != g[b] for a, b in combinations(range(len(g)), 2)) for g, _ in items)
    accs = []
    for choice in product(*per_item):
        hits = 0
        for (g, _), p in zip(items, choice, strict=True):
            hits += sum((p[a] > p[b]) - (p[a] < p[b]) == (g[a] > g[b]) - (g[a] < g[b])
                        for a, b in combinations(range(len(g)), 2) if g[a] != g[b])
        accs.append(hits / total)
    return sum(accs) / len(accs)


def test_pairwise_chance_is_the_exact_mean_over_shuffles():
    items = [([5, 3, 1, 0], [4, 4, 2, 1]), ([2, 2, 5], [3, 1, 3]), ([4, 0], [5, 5])]
    chance, _ = pairwise_chance(items)
    assert chance == pytest.approx(_brute_force_chance(items))


def test_pairwise_chance_keeps_the_judges_ties():
    distinct = [([5, 4, 2, 0], [1, 2, 3, 4])] * 10
    assert pairwise_chance(distinct)[0] == pytest.approx(0.5)
    constant = [([5, 4, 2, 0], [3, 3, 3, 3])] * 10
    chance, p = pairwise_chance(constant)
    assert chance == 0.0 and p == 1.0


def test_pairwise_p_separates_a_good_judge_from_a_shuffled_one():
    rng = random.Random(3)
    good = [([5, 4, 2, 0], [5, 4, 2, 1]) for _ in range(50)]
    m = reward_model_metrics({"gold": g, "pred": p} for g, p in good)
    assert m["pairwise_accuracy"] == 1.0 and m["pairwise_p"] < 0.01
    assert m["pairwise_chance"] == pytest.approx(0.5)
    # Judges that shuffle their scores: p is about uniform over them, so about 5% reach p < 0.05.
    ps = []
    for trial in range(100):
        noise = []
        for _ in range(50):
            pred = [5, 4, 2, 1]
            rng.shuffle(pred)
            noise.append(([5, 4, 2, 0], pred))
        ps.append(pairwise_chance(noise, seed=trial, permutations=200)[1])
    assert sum(p < 0.05 for p in ps) <= 12 and 0.35 < sum(ps) / len(ps) < 0.65


def test_pairwise_chance_is_none_without_gold_pairs():
    m = reward_model_metrics([{"gold": [3, 3], "pred": [1, 5]}])
    assert m["pairwise_chance"] is None and m["pairwise_p"] is None
