"""top layer: ``init``'s bounds: a documented margin (``MARGINS``) beyond each measured interval's
far end, rounded outwards, so the written suite passes on the model it was made from and on benign
variants and fails on real damage."""

from __future__ import annotations

import math
from collections.abc import Callable

MARGINS = {"relative": 0.25, "logit": 0.5, "unit": 0.1, "fraction": 0.1}

#: Review openings for the steering direction; the contrast pair and the target/foil tokens.


def lower_bound(low: float, value: float, unit: str) -> float:
    """A ``min=`` bound: ``low`` less the margin, rounded down."""
    step = MARGINS["logit"] if unit == "logit" else MARGINS["unit"]
    bound = low - max(MARGINS["relative"] * abs(value), step)
    return _round(bound, unit, math.floor)


def upper_bound(high: float, value: float, unit: str) -> float:
    """A ``max=`` bound: ``high`` plus the margin, rounded up."""
    step = MARGINS["logit"] if unit == "logit" else MARGINS["unit"]
    bound = high + max(MARGINS["relative"] * abs(value), step)
    return _round(bound, unit, math.ceil)


def fraction_bound(low: float) -> float:
    """A ``min_fraction=`` bound: the Wilson interval's low end less the margin."""
    return max(0.0, _round(low - MARGINS["fraction"], "unit", math.floor))


def _round(value: float, unit: str, how: Callable[[float], int]) -> float:
    scale = 10 if unit == "logit" else 100
    return how(round(value * scale, 6)) / scale
