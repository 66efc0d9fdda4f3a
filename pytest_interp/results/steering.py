"""results layer: steering effects per coefficient, with generations and controls."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InterpError


@dataclass(frozen=True, eq=False)
class SteeringResult:
    """The effect of adding ``coef * vector`` at (layer, site), per coefficient.

    ``values`` is the metric at the last position per coefficient: logit(target) -
    logit(foil), or log P(target) when there is no foil (None without a target); ``delta``
    is its change from the unsteered ``baseline``; ``kl`` is KL(unsteered || steered) of the
    next-token distributions (nats). Coefficient 0 is the unsteered run itself.
    """

    model: str
    prompt: str
    layer: int
    site: str
    positions: str | int
    vector_norm: float
    coefs: tuple[float, ...]
    target: str | None
    foil: str | None
    baseline: float | None
    values: np.ndarray | None
    kl: np.ndarray
    baseline_top: tuple[tuple[str, float], ...]
    steered_top: tuple[tuple[tuple[str, float], ...], ...]
    baseline_text: str | None = None
    texts: tuple[str, ...] | None = None
    sampled: bool = False
    # per generation (baseline first, then per coefficient): each token and step margin
    tokens: tuple[tuple[str, ...], ...] | None = None
    margins: tuple[tuple[float, ...], ...] | None = None
    # the delta of each random control vector of the same norm (``control=N``), first coef
    controls: tuple[float, ...] = ()
    measure: str | None = None  # the metric= asked for (metrics.label); None: the default

    @property
    def metric(self) -> str:
        if self.measure is not None:
            return self.measure
        if self.target is None:
            return "none"
        return "logit diff" if self.foil is not None else "log prob"

    @property
    def delta(self) -> np.ndarray:
        """values - baseline per coefficient (exactly 0 at coef 0)."""
        if self.values is None or self.baseline is None:
            raise InterpError("no target was given: pass target= (and foil=) to measure a delta")
        return self.values - self.baseline

    def index(self, coef: float) -> int:
        if coef not in self.coefs:
            raise InterpError(f"coef {coef} was not swept (swept: {list(self.coefs)})")
        return self.coefs.index(coef)

    def text(self, coef: float) -> str:
        """The steered generation for ``coef``."""
        if self.texts is None:
            raise InterpError("nothing was generated: pass max_new_tokens= to steer")
        return self.texts[self.index(coef)]

    def table(self, failing: Sequence[int] = ()) -> str:
        """Baseline vs steered: metric, delta, KL and top-5 per coefficient, then the texts."""
        what = "" if self.target is None else f"{self.metric} of {self.target!r}" \
            if self.measure is not None else (
            f"{self.target!r} - {self.foil!r} logit diff" if self.foil is not None
            else f"log P({self.target!r})")
        lines = [
            f"steering at {self.site}@{self.layer} (vector norm {self.vector_norm:.3g}, "
            f"positions {self.positions}) on {self.prompt!r}"
            + (f": {what} at the last position" if what else ""),
            f"  {'coef':>8}  {'value':>8}  {'delta':>8}  {'KL':>7}  top-5 next tokens",
        ]

        def tops(items: tuple[tuple[str, float], ...]) -> str:
            return ", ".join(f"{s!r} {p:.2f}" for s, p in items[:5])

        base = "" if self.baseline is None else f"{self.baseline:>8.3f}"
        lines.append(f"  {'baseline':>8}  {base:>8}  {'':>8}  {'':>7}  {tops(self.baseline_top)}")
        for i, coef in enumerate(self.coefs):
            value = "" if self.values is None else f"{self.values[i]:>8.3f}"
            delta = "" if self.values is None else f"{self.delta[i]:>+8.3f}"
            lines.append(f"{'>' if i in failing else ' '} {coef:>8g}  {value:>8}  {delta:>8}  "
                         f"{self.kl[i]:>7.3f}  {tops(self.steered_top[i])}")
        if self.texts is not None:
            how = "sampled" if self.sampled else "greedy"
            lines.append(f"  {how} generations:")
            lines.append(f"  {'baseline':>8}  {self.baseline_text!r}")
            for i, coef in enumerate(self.coefs):
                lines.append(f"{'>' if i in failing else ' '} {coef:>8g}  {self.texts[i]!r}")
        return "\n".join(lines)
