"""results layer: metrics with parts ablated, against random sets like them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..errors import InterpError


@dataclass(frozen=True, eq=False)
class AblationResult:
    """A metric with a set of parts ablated, and with random sets like it (the controls).

    ``mode`` "necessity": the set itself is ablated and ``value`` is the drop, clean -
    ablated. ``mode`` "sufficiency": every other part of the same kinds is ablated and
    ``value`` is the faithfulness, ablated / clean (Wang et al. 2022). ``controls`` holds the
    metric for each of ``control_sets`` (random sets of as many parts of each kind) in place
    of the set; ``metric`` names the metric (``metrics.label``).
    """

    model: str
    prompt: str
    answer: str | None
    foil: str | None
    parts: tuple[str, ...]
    method: str
    mode: str
    clean: float
    ablated: float
    controls: tuple[float, ...] = ()
    control_sets: tuple[tuple[str, ...], ...] = ()
    metric: str = "logit diff"

    @property
    def value_name(self) -> str:
        return "drop" if self.mode == "necessity" else "faithfulness"

    def value_of(self, ablated: float) -> float:
        """The drop or faithfulness a run scoring ``ablated`` has."""
        if self.mode == "necessity":
            return self.clean - ablated
        if self.clean == 0:
            raise InterpError(f"the clean {self.metric} is 0: faithfulness (ablated / clean) is "
                              "undefined; use another metric or prompt")
        return ablated / self.clean

    @property
    def value(self) -> float:
        return self.value_of(self.ablated)

    @property
    def control_values(self) -> np.ndarray:
        return np.array([self.value_of(c) for c in self.controls])

    @property
    def beaten(self) -> float:
        """The share of controls whose value is below the set's (ties count half)."""
        return beaten(self.value, self.control_values)

    @property
    def measured(self) -> str:
        return metrics.describe(self.metric, self.answer, self.foil)

    @property
    def described(self) -> str:
        """``ablating L9H6, L9H9`` or ``keeping only ...``, with the method."""
        verb = "ablating" if self.mode == "necessity" else "ablating all but"
        return f"{verb} {', '.join(self.parts)} ({self.method} ablation)"


def beaten(value: float, controls: np.ndarray) -> float:
    """The share of ``controls`` below ``value``, ties counting half (0 without controls)."""
    if not len(controls):
        return 0.0
    return float(((controls < value).sum() + 0.5 * (controls == value).sum()) / len(controls))
