"""results layer: statistics over a dataset's per-prompt values: an estimate, its interval, a
verdict.

``stat="mean"`` and ``"median"`` get a seeded bootstrap confidence interval (scipy's
``stats.bootstrap``: ``"percentile"``, or ``"bca"``, bias-corrected and accelerated);
``"fraction"`` (the share of prompts that meet the per-prompt check) gets a Wilson score
interval, which stays honest at 0 and 1, where a bootstrap of a proportion collapses to a
point. The verdict is three-valued: PASS when the whole interval clears the bound, FAIL when
the whole interval is on the wrong side, INCONCLUSIVE when it straddles the bound.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InterpError

STATS = ("mean", "median", "fraction")
INTERVALS = ("percentile", "bca")
RESAMPLES = 9999


class Verdict(enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Estimate:
    """``stat`` of ``n`` per-prompt values, with its ``confidence`` interval [low, high]."""

    stat: str
    value: float
    low: float
    high: float
    n: int
    confidence: float
    method: str

    def __str__(self) -> str:
        return (f"{self.stat} {self.value:.3f}, {self.confidence:.0%} CI "
                f"[{self.low:.3f}, {self.high:.3f}] ({self.method}, n={self.n})")


def estimate(values: Sequence[float], stat: str, *, confidence: float = 0.95,
             interval: str = "percentile", seed: int = 0) -> Estimate:
    """The statistic of ``values`` and its interval (for ``"fraction"``: values are 0/1)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise InterpError("the dataset has no rows")
    if not np.isfinite(data).all():
        bad = int(np.flatnonzero(~np.isfinite(data))[0])
        raise InterpError(f"row {bad}'s value is {data[bad]}: a statistic needs finite values")
    if stat == "fraction":
        from scipy.stats import binomtest

        k, n = int(data.sum()), data.size
        ci = binomtest(k, n).proportion_ci(confidence, method="wilson")
        return Estimate(stat, k / n, float(ci.low), float(ci.high), n, confidence, "Wilson")
    func = np.mean if stat == "mean" else np.median
    value = float(func(data))
    if data.size == 1 or np.ptp(data) == 0:
        return Estimate(stat, value, value, value, data.size, confidence, "no spread")
    from scipy.stats import bootstrap

    method = "BCa" if interval == "bca" else "percentile"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa's degenerate-data warning: we fall back below
        res = bootstrap((data,), func, n_resamples=RESAMPLES, confidence_level=confidence,
                        method=method, rng=np.random.default_rng(seed), vectorized=True)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InterpError(f"the {method} interval is undefined for these values (too few "
                          "distinct ones): use interval='percentile' or add prompts")
    return Estimate(stat, value, low, high, data.size, confidence,
                    f"{method} bootstrap, {RESAMPLES} resamples")


def verdict(est: Estimate, low: float | None, high: float | None) -> Verdict:
    """PASS when [est.low, est.high] lies within [low, high], FAIL when it lies wholly
    outside, INCONCLUSIVE when it straddles a bound."""
    outside = (low is not None and est.high < low) or (high is not None and est.low > high)
    if outside:
        return Verdict.FAIL
    inside = (low is None or est.low >= low) and (high is None or est.high <= high)
    return Verdict.PASS if inside else Verdict.INCONCLUSIVE
