"""Intervals over seeds, checked against hand-computed values (t and z quantiles from tables)."""

from __future__ import annotations

import math

import pytest

from srscale.analysis.stats import Estimate, difference_bounds, mean_ci, metric_bounds, wilson

T_975_2 = 4.302652729749464  # Student t, 97.5% quantile, 2 degrees of freedom
T_975_1 = 12.706204736174694  # 1 degree of freedom
Z_975 = 1.959963984540054


def test_t_interval_of_three_seeds():
    e = mean_ci([1.0, 2.0, 3.0])
    half = T_975_2 * 1.0 / math.sqrt(3)  # sd = 1
    assert (e.mean, e.n, e.sd) == (2.0, 3, pytest.approx(1.0))
    assert (e.low, e.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert e.half_width == pytest.approx(half)
    assert e.format() == "2 [-0.484, 4.48]"


def test_t_interval_of_two_seeds_is_wide():
    e = mean_ci([0.1, 0.3])
    half = T_975_1 * math.sqrt(0.02) / math.sqrt(2)
    assert e.mean == pytest.approx(0.2)
    assert (e.low, e.high) == (pytest.approx(0.2 - half), pytest.approx(0.2 + half))


def test_other_levels_use_their_own_quantile():
    e90 = mean_ci([1.0, 2.0, 3.0], level=0.90)
    assert e90.high - 2 == pytest.approx(2.919985580355516 / math.sqrt(3))  # t_{0.95, 2}


def test_one_seed_has_a_mean_and_no_interval():
    e = mean_ci([0.42])
    assert e == Estimate(0.42, None, None, 1)
    assert e.half_width is None
    assert e.format() == "0.42 (1 seed)"


def test_missing_values_are_dropped_not_counted():
    assert mean_ci([None, float("nan"), 5.0]) == Estimate(5.0, None, None, 1)
    empty = mean_ci([None, float("nan")])
    assert (empty.mean, empty.n) == (None, 0) and empty.format() == "—"
    assert mean_ci([]).n == 0


def test_identical_seeds_give_a_zero_width_interval():
    e = mean_ci([0.5, 0.5, 0.5])
    assert (e.low, e.mean, e.high) == (0.5, 0.5, 0.5)


def test_an_interval_is_cut_to_the_metrics_range_and_its_mean_kept():
    values = [0.95, 0.99, 1.0]  # t interval about [0.91, 1.04]
    free, cut = mean_ci(values), mean_ci(values, bounds=(0.0, 1.0))
    assert free.high > 1 and cut.high == 1.0
    assert (cut.mean, cut.low, cut.sd) == (free.mean, free.low, free.sd)
    low = mean_ci([0.0, 0.0, 0.06], bounds=(0.0, 1.0))
    assert low.low == 0.0 and low.high == pytest.approx(0.02 + T_975_2 * math.sqrt(0.0012) / math.sqrt(3))
    assert mean_ci([-5.0, 5.0], bounds=(0.0, None)).low == 0.0  # open upper bound: only the lower cut
    assert mean_ci([-5.0, 5.0], bounds=(0.0, None)).high == pytest.approx(T_975_1 * math.sqrt(50) / math.sqrt(2))


@pytest.mark.parametrize(("name", "bounds"), [
    ("eval/rm/pairwise_accuracy", (0.0, 1.0)), ("eval/task/repeat/accuracy", (0.0, 1.0)),
    ("eval/rm/parse_rate", (0.0, 1.0)), ("iter/parse_failure_rate", (0.0, 1.0)),
    ("eval/rm/pairwise_chance", (0.0, 1.0)), ("eval/rm/pairwise_p", (0.0, 1.0)),
    ("gate/probe/tripped", (0.0, 1.0)), ("iter/dpo_reward_accuracy", (0.0, 1.0)),
    ("eval/lm_eval/arc_easy/acc_norm,none", (0.0, 1.0)), ("eval/lm_eval/gsm8k/exact_match,strict-match", (0.0, 1.0)),
    ("eval/rm/spearman_per_prompt", (-1.0, 1.0)), ("eval/rm/pairwise_over_chance", (-1.0, 1.0)), ("eval/rm/kendall_pooled", (-1.0, 1.0)),
    ("cost/total/flops", (0.0, None)), ("cost/cumulative/wall_s", (0.0, None)),
    ("eval/lm_eval/arc_easy/acc_stderr,none", (None, None)), ("iter/dpo_reward_margin", (None, None)),
    ("eval/mtbench/score", (None, None)), ("sft/loss", (None, None)),
])
def test_metric_bounds_follow_the_names_srscale_logs(name, bounds):
    assert metric_bounds(name) == bounds


def test_a_gain_of_a_fraction_lies_in_minus_one_to_one():
    assert difference_bounds((0.0, 1.0)) == (-1.0, 1.0)
    assert difference_bounds((0.0, None)) == (None, None)


def test_wilson_at_the_edges():
    none = wilson(0, 3)
    assert (none.mean, none.low) == (0.0, 0.0)
    assert none.high == pytest.approx(Z_975**2 / (3 + Z_975**2))  # k = 0: z^2 / (n + z^2)
    every = wilson(3, 3)
    assert every.low == pytest.approx(3 / (3 + Z_975**2)) and every.high == 1.0


def test_wilson_two_of_three_matches_the_textbook_value():
    e = wilson(2, 3)
    assert e.mean == pytest.approx(2 / 3)
    assert (e.low, e.high) == (pytest.approx(0.2077, abs=1e-4), pytest.approx(0.9385, abs=1e-4))
    assert e.n == 3


def test_wilson_without_seeds_and_bad_counts():
    assert wilson(0, 0) == Estimate(None, None, None, 0)
    with pytest.raises(ValueError, match="0..n"):
        wilson(4, 3)
