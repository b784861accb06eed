"""Intervals over seeds: a mean with a Student-t interval, and a pass rate with a Wilson interval.

Pure functions on plain numbers. Assumptions: seeds are independent draws of the same configuration;
the t-interval assumes roughly normal per-seed values (with 3 seeds it is wide, which is the point);
a single seed has a mean and no interval (never a made-up one); missing values (``None``/NaN) are
dropped before counting. An interval is cut to the range the metric can take (:func:`metric_bounds`:
an accuracy's t interval over 3 seeds can reach past 1, which no seed can).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

LEVEL = 0.95
Bounds = tuple[float | None, float | None]
UNBOUNDED: Bounds = (None, None)
# Last name segments of the metrics srscale logs that are fractions of something (accuracies, rates,
# chance levels, p values, agreement, 0/1 flags; lm-eval's acc / acc_norm / exact_match / em).
_FRACTION_ENDS = ("accuracy", "rate", "exact_match", "five_best", "chance", "pairwise_p", "agreement",
                  "tripped", "acc", "acc_norm", "em")
_CORRELATION_STARTS = ("spearman", "kendall")


def metric_bounds(name: str) -> Bounds:
    """The range a metric can take, read from its name: [0, 1] for fractions (``.../accuracy``,
    ``..._rate``, ``.../pairwise_chance``, ``.../pairwise_p``, ...), [-1, 1] for rank correlations
    (``spearman_*``, ``kendall_*``) and margins over chance (``*_over_chance``), [0, inf) for
    ``cost/*``; anything else is unbounded. lm-eval's ``acc,none`` style names are read without the
    filter after the comma."""
    last = str(name).rsplit("/", 1)[-1].split(",", 1)[0]
    if last.endswith("_over_chance"):  # a fraction minus its chance level
        return (-1.0, 1.0)
    if last.endswith(_FRACTION_ENDS) and not last.endswith("stderr"):
        return (0.0, 1.0)
    if last.startswith(_CORRELATION_STARTS):
        return (-1.0, 1.0)
    if str(name).startswith("cost/"):
        return (0.0, None)
    return UNBOUNDED


def difference_bounds(bounds: Bounds) -> Bounds:
    """The range of a difference of two values in ``bounds`` (a gain of an accuracy: [-1, 1])."""
    lo, hi = bounds
    return (None, None) if lo is None or hi is None else (lo - hi, hi - lo)


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` values with its two-sided interval; ``low``/``high`` are None when n < 2."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    sd: float | None = None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def format(self, digits: int = 3) -> str:
        """``0.312 [0.281, 0.343]``, ``0.312 (1 seed)`` or ``—`` (no value)."""
        if self.mean is None:
            return "—"
        if self.low is None:
            return f"{self.mean:.{digits}g} ({self.n} seed)"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"


def _finite(values: Iterable[float | None]) -> list[float]:
    out = []
    for v in values:
        if v is None:
            continue
        v = float(v)
        if not math.isnan(v):
            out.append(v)
    return out


def mean_ci(values: Iterable[float | None], level: float = LEVEL, bounds: Bounds = UNBOUNDED) -> Estimate:
    """Mean and Student-t interval ``mean ± t_{(1+level)/2, n-1} · s / √n`` (s: sample sd, ddof 1),
    cut to ``bounds`` (lower, upper; None: open) where it reaches past them."""
    from scipy import stats

    xs = _finite(values)
    n = len(xs)
    if n == 0:
        return Estimate(None, None, None, 0)
    mean = math.fsum(xs) / n
    if n == 1:
        return Estimate(mean, None, None, 1)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / math.sqrt(n)
    lo, hi = bounds
    low = mean - half if lo is None else max(lo, mean - half)
    high = mean + half if hi is None else min(hi, mean + half)
    return Estimate(mean, low, high, n, sd)


def wilson(successes: int, n: int, level: float = LEVEL) -> Estimate:
    """``successes / n`` with the Wilson score interval (sensible at 0/n and n/n, unlike Wald's)."""
    from scipy import stats

    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..n, got {successes} of {n}")
    if n == 0:
        return Estimate(None, None, None, 0)
    z = float(stats.norm.ppf((1 + level) / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)
