"""results layer: what a sparse dictionary reads in a prompt (``FeaturesResult``), how well it
stands in for the model (``FidelityResult``), and each latent's attribution to a metric
(``FeatureAttributionResult``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InterpError


@dataclass(frozen=True, eq=False)
class FeaturesResult:
    """The active latents of ``sae`` at every position of ``prompt``.

    ``latents`` [P, m]: each position's active latents, strongest first, padded with -1;
    ``values`` [P, m]: their activations (0 where padded). ``labels``: a label for each latent
    a figure or a failure shows (the strongest per position, and any a test asked about).
    """

    model: str
    sae: str
    site: str
    n_latents: int
    prompt: str
    str_tokens: tuple[str, ...]
    latents: np.ndarray
    values: np.ndarray
    labels: Mapping[int, str] = field(default_factory=dict)

    def _position(self, position: int) -> int:
        n = len(self.str_tokens)
        if not -n <= position < n:
            raise InterpError(f"position {position} is outside {self.prompt!r} ({n} tokens): "
                              f"use -{n}..{n - 1}")
        return position % n

    def dense(self) -> np.ndarray:
        """Every latent's activation at every position: [positions, n_latents]."""
        out = np.zeros((len(self.str_tokens), self.n_latents), dtype=np.float32)
        rows, cols = np.nonzero(self.latents >= 0)
        out[rows, self.latents[rows, cols]] = self.values[rows, cols]
        return out

    def active(self, position: int = -1) -> list[tuple[int, float]]:
        """(latent, activation) of every active latent at ``position``, strongest first."""
        p = self._position(position)
        return [(int(i), float(v)) for i, v in zip(self.latents[p], self.values[p], strict=True)
                if i >= 0]

    def top(self, position: int = -1, k: int = 5) -> list[tuple[int, float, str]]:
        """The ``k`` strongest latents at ``position``: (latent, activation, label)."""
        return [(i, v, self.label(i)) for i, v in self.active(position)[:k]]

    def activation(self, latent: int, position: int = -1) -> float:
        """``latent``'s activation at ``position`` (0.0: silent)."""
        return dict(self.active(position)).get(latent, 0.0)

    def rank(self, latent: int, position: int = -1) -> int | None:
        """``latent``'s rank among the active latents at ``position`` (1 = strongest), or None
        when it is silent there."""
        order = [i for i, _ in self.active(position)]
        return order.index(latent) + 1 if latent in order else None

    def l0(self, position: int = -1) -> int:
        """How many latents are active at ``position``."""
        return len(self.active(position))

    def label(self, latent: int) -> str:
        return self.labels.get(latent, "")

    def named(self, latent: int) -> str:
        """``latent 4512 ('Paris', 'France')``: the latent and its label, for failures."""
        label = self.label(latent)
        return f"latent {latent}" + (f" ({label})" if label else "")


@dataclass(frozen=True, eq=False)
class FidelityResult:
    """How well ``sae`` stands in for the model on ``texts``, over the positions from ``skip``
    on (the first positions are neither spliced nor measured: the attention sink).

    ``sse``: the reconstruction's squared error over the ``measured`` positions; ``y_sum`` [d]
    and ``y_sq``: the target's sum and sum of squares there, so that its variance about the
    mean of every measured position (``sst``) pools over texts. ``l0``: the mean number of
    active latents per measured position. Losses are mean next-token cross-entropies in nats
    over the ``positions`` predictions the splice can change: clean, with the reconstruction
    spliced in, and with the error term added back (the same run: zero change, up to
    rounding). ``kl``: the mean KL(clean || spliced) of those predictions.
    """

    model: str
    sae: str
    site: str
    texts: tuple[str, ...]
    positions: int
    measured: int
    sse: float
    y_sum: np.ndarray
    y_sq: float
    l0: float
    ce_clean: float
    ce_spliced: float
    ce_with_error: float
    kl: float

    @property
    def sst(self) -> float:
        """The target's total squared deviation from its mean over the measured positions."""
        return self.y_sq - float(self.y_sum @ self.y_sum) / self.measured

    @property
    def fvu(self) -> float:
        """The fraction of the target's variance the reconstruction leaves unexplained."""
        return self.sse / self.sst if self.sst > 0 else float("inf")

    @property
    def delta_ce(self) -> float:
        """How much the loss rises with the reconstruction spliced in, in nats."""
        return self.ce_spliced - self.ce_clean

    @property
    def error_term_change(self) -> float:
        """The loss change with the error term kept: 0 when the splice is exact."""
        return self.ce_with_error - self.ce_clean

    @classmethod
    def pooled(cls, parts: Sequence[FidelityResult]) -> FidelityResult:
        """One result over several texts' (errors summed, means weighted by positions)."""
        n, m = sum(p.positions for p in parts), sum(p.measured for p in parts)

        def mean(name: str) -> float:
            return sum(getattr(p, name) * p.positions for p in parts) / n

        first = parts[0]
        return cls(first.model, first.sae, first.site, tuple(t for p in parts for t in p.texts),
                   n, m, sum(p.sse for p in parts), np.sum([p.y_sum for p in parts], axis=0),
                   sum(p.y_sq for p in parts),
                   sum(p.l0 * p.measured for p in parts) / m, mean("ce_clean"),
                   mean("ce_spliced"), mean("ce_with_error"), mean("kl"))


@dataclass(frozen=True, eq=False)
class FeatureAttributionResult:
    """Each latent's attribution to ``metric`` at each position of ``prompt``: activation x
    gradient, a first-order estimate of how much the metric drops when the latent is zeroed
    there. ``error``: the error term's attribution per position (the part of the site the
    dictionary misses, as one node; 0 at the skipped leading positions). ``exact``: the
    metric drop of the ``verify_top_k``
    largest (position, latent) nodes, each zeroed in an exact patched run."""

    model: str
    sae: str
    metric: str
    prompt: str
    str_tokens: tuple[str, ...]
    clean_metric: float
    latents: np.ndarray  # [P, m] active latents, padded with -1
    scores: np.ndarray  # [P, m] their attributions
    error: np.ndarray  # [P]
    exact: Mapping[tuple[int, int], float] = field(default_factory=dict)
    labels: Mapping[int, str] = field(default_factory=dict)

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        """The ``k`` nodes with the largest |attribution|: (position, latent, score)."""
        rows, cols = np.nonzero(self.latents >= 0)
        order = np.argsort(-np.abs(self.scores[rows, cols]), kind="stable")[:k]
        return [(int(rows[i]), int(self.latents[rows[i], cols[i]]),
                 float(self.scores[rows[i], cols[i]])) for i in order]

    def score(self, latent: int, position: int = -1) -> float:
        """``latent``'s attribution at ``position`` (0.0: it is silent there)."""
        p = position % len(self.str_tokens)
        hit = np.nonzero(self.latents[p] == latent)[0]
        return float(self.scores[p, hit[0]]) if hit.size else 0.0
