"""Reward-model quality of a self-judging model against gold rankings (Yuan et al. 2024, Table 4).

Input: one item per prompt, ``{"gold": [g1, g2, ...], "pred": [p1, p2, ...]}``: gold scores (higher is
better; e.g. negated human ranks) and the model's parsed judge scores for the same responses, ``None``
(or NaN) where the judgment did not parse. Invalid predictions lower ``parse_rate`` and are left out of
every other metric; they are never filled in.

Definitions (a metric with nothing to average over is ``None``, never NaN):

* ``pairwise_accuracy``: over response pairs of the same prompt with *different* gold scores and both
  predictions valid, the fraction that the predictions order the same way. A prediction tie on such a
  pair counts as **wrong** (the judge failed to separate them). Pairs tied in gold are not counted.
* ``pairwise_chance``: the expected ``pairwise_accuracy`` of the same judge with its valid predictions
  shuffled among the responses of each prompt (exact, not sampled): it keeps the judge's score
  distribution and its ties, so a judge that gives most responses one score has a low chance level.
  A uniformly random 0-5 judge would have 15/36; a constant one 0.
* ``pairwise_p``: the share of ``PERMUTATIONS`` such within-prompt shuffles (seeded, so reproducible)
  whose pairwise accuracy is at least the judge's (a one-sided permutation test; +1 smoothed, so never 0).
* ``exact_match``: over prompts with >= 2 responses, all predictions valid, the fraction whose order by
  prediction equals the order by gold *as a weak order*: every pair must compare the same way (<, =, >)
  in both, so gold ties must be prediction ties and vice versa.
* ``five_best``: over responses the model scored 5 (``pred >= 4.5``, so averaged or decimal scores that
  round to 5 count), the fraction whose gold score is the highest of their prompt (a shared top counts).
* ``spearman_per_prompt`` / ``kendall_per_prompt``: ``scipy.stats.spearmanr`` / ``kendalltau`` (tau-b)
  per prompt over its valid responses, averaged over prompts where defined (>= 2 valid responses, and
  neither gold nor pred constant); ``n_corr_items`` says how many.
* ``spearman_pooled`` / ``kendall_pooled``: the same statistics over all valid (gold, pred) pairs of all
  prompts pooled together (mixes prompts' scales; reported beside, not instead of, the per-prompt mean).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

from scipy.stats import kendalltau, spearmanr

FIVE_BEST_MIN = 4.5  # a prediction at or above this counts as "scored 5"
PERMUTATIONS = 1000  # within-prompt shuffles for pairwise_p


def _valid(x: float | None) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _finite_or_none(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _correlations(gold: Sequence[float], pred: Sequence[float]) -> tuple[float | None, float | None]:
    """(Spearman rho, Kendall tau-b), or (None, None) when undefined (< 2 points or a constant side)."""
    if len(gold) < 2 or len(set(gold)) < 2 or len(set(pred)) < 2:
        return None, None
    rho, _ = spearmanr(gold, pred)
    tau, _ = kendalltau(gold, pred)
    return _finite_or_none(rho), _finite_or_none(tau)


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _gold_pairs(gold: Sequence[float]) -> int:
    """Response pairs of one prompt that gold orders (gold ties are not pairs)."""
    return sum(g != h for g, h in combinations(gold, 2))


def _pairs_correct(gold: Sequence[float], pred: Sequence[float]) -> int:
    """Gold-ordered pairs that ``pred`` orders the same way (a prediction tie is wrong)."""
    return sum(_sign(pred[a] - pred[b]) == _sign(gold[a] - gold[b])
               for a, b in combinations(range(len(gold)), 2) if gold[a] != gold[b])


def _expected_correct(gold: Sequence[float], pred: Sequence[float]) -> float:
    """E[pairs ordered right] when ``pred`` is assigned to the responses in a uniformly random order.

    A gold-ordered pair receives two distinct predictions drawn without replacement; they order it
    right with probability (pairs of unequal predictions) / (n (n - 1)), the same for every pair.
    """
    n = len(pred)
    if n < 2:
        return 0.0
    unequal = sum(p != q for p, q in combinations(pred, 2))
    return _gold_pairs(gold) * unequal / (n * (n - 1))


def pairwise_chance(valid_items: Sequence[tuple[Sequence[float], Sequence[float]]], seed: int = 0,
                    permutations: int = PERMUTATIONS) -> tuple[float | None, float | None]:
    """(chance level, one-sided permutation p) of pairwise accuracy over (gold, pred) of valid responses."""
    total = sum(_gold_pairs(gold) for gold, _ in valid_items)
    if not total:
        return None, None
    observed = sum(_pairs_correct(g, p) for g, p in valid_items)
    chance = sum(_expected_correct(g, p) for g, p in valid_items) / total
    rng = random.Random(seed)
    shuffled = [list(p) for _, p in valid_items]
    at_least = 0
    for _ in range(permutations):
        hits = 0
        for (gold, _), pred in zip(valid_items, shuffled, strict=True):
            rng.shuffle(pred)
            hits += _pairs_correct(gold, pred)
        at_least += hits >= observed
    return chance, (at_least + 1) / (permutations + 1)


def reward_model_metrics(items: Iterable[Mapping[str, Sequence[float | None]]]) -> dict[str, Any]:
    """Table-4 metrics over ``items`` (see the module docstring for exact definitions)."""
    n_items = n_responses = n_valid = 0
    pair_total = pair_correct = 0
    em_total = em_hits = 0
    five_total = five_hits = 0
    rhos: list[float] = []
    taus: list[float] = []
    pooled_gold: list[float] = []
    pooled_pred: list[float] = []
    valid_items: list[tuple[list[float], list[float]]] = []

    for idx, item in enumerate(items):
        gold = [float(g) for g in item["gold"]]
        pred = list(item["pred"])
        if len(gold) != len(pred):
            raise ValueError(f"item {idx}: {len(gold)} gold scores but {len(pred)} predictions")
        if any(math.isnan(g) for g in gold):
            raise ValueError(f"item {idx}: gold scores must all be numbers")
        n_items += 1
        n_responses += len(pred)
        ok = [i for i, p in enumerate(pred) if _valid(p)]
        n_valid += len(ok)
        g_ok = [gold[i] for i in ok]
        p_ok = [float(pred[i]) for i in ok]
        pooled_gold += g_ok
        pooled_pred += p_ok
        valid_items.append((g_ok, p_ok))

        pair_total += _gold_pairs(g_ok)
        pair_correct += _pairs_correct(g_ok, p_ok)

        if len(gold) >= 2 and len(ok) == len(gold):
            em_total += 1
            em_hits += all(_sign(p_ok[a] - p_ok[b]) == _sign(g_ok[a] - g_ok[b])
                           for a, b in combinations(range(len(ok)), 2))

        if gold:
            top = max(gold)
            for g, p in zip(g_ok, p_ok, strict=True):
                if p >= FIVE_BEST_MIN:
                    five_total += 1
                    five_hits += g == top

        rho, tau = _correlations(g_ok, p_ok)
        if rho is not None:
            rhos.append(rho)
        if tau is not None:
            taus.append(tau)

    pooled_rho, pooled_tau = _correlations(pooled_gold, pooled_pred)
    chance, p_value = pairwise_chance(valid_items)
    return {
        "n_items": n_items,
        "n_responses": n_responses,
        "n_valid": n_valid,
        "parse_rate": n_valid / n_responses if n_responses else None,
        "pairwise_accuracy": pair_correct / pair_total if pair_total else None,
        "n_pairs": pair_total,
        "pairwise_chance": chance,
        "pairwise_p": p_value,
        "exact_match": em_hits / em_total if em_total else None,
        "n_exact_match_items": em_total,
        "five_best": five_hits / five_total if five_total else None,
        "n_five": five_total,
        "spearman_per_prompt": _mean(rhos),
        "kendall_per_prompt": _mean(taus),
        "n_corr_items": len(rhos),
        "spearman_pooled": pooled_rho,
        "kendall_pooled": pooled_tau,
    }
