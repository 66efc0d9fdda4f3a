"""results layer: every head's attention scores and role labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .. import checks
from ..errors import InterpError
from ..record import derived

ATTENTION_KINDS = ("previous_token", "induction", "first_token", "self", "entropy")
# Label thresholds, checked in this order; a head meeting none is "mixed".
LABEL_THRESHOLDS: dict[str, float] = {
    "induction": 0.4, "previous_token": 0.5, "self": 0.5, "first_token": 0.6,
}


def attention_labels(
    scores: dict[str, np.ndarray], thresholds: dict[str, float] | None = None
) -> tuple[tuple[str, ...], ...]:
    """A label per head: the first kind (induction, previous_token, self, first_token) whose
    score reaches its threshold, else "mixed"."""
    limits = dict(LABEL_THRESHOLDS)
    for kind, value in (thresholds or {}).items():
        if kind not in limits:
            raise InterpError(f"no label threshold {kind!r}: use {', '.join(limits)}")
        limits[kind] = float(value)
    n_layers, n_heads = scores["induction"].shape
    return tuple(
        tuple(next((k for k, t in limits.items() if scores[k][layer, head] >= t), "mixed")
              for head in range(n_heads))
        for layer in range(n_layers)
    )


@dataclass(frozen=True, eq=False)
class AttentionResult:
    """Per-head attention scores [layers, heads] by kind, a label per head, and the patterns
    [layers, heads, query, key] of the prompt (the repeated random sequence when None)."""

    model: str
    prompt: str | None
    str_tokens: tuple[str, ...]
    scores: dict[str, np.ndarray]
    labels: tuple[tuple[str, ...], ...]
    patterns: np.ndarray
    seed: int = 0
    n: int = 20
    selected: tuple[tuple[int, int], ...] | None = None  # set by select(): snapshot these only

    def select(self, heads: Sequence[tuple[int, int]]) -> AttentionResult:
        """The same summary narrowed to some heads: snapshots store and compare only them."""
        chosen = tuple(self.head_index(*h) for h in heads)
        return derived(replace(self, selected=chosen), self, lambda r: r.select(chosen))

    @property
    def n_layers(self) -> int:
        return len(self.labels)

    @property
    def n_heads(self) -> int:
        return len(self.labels[0])

    def head_index(self, layer: int, head: int) -> tuple[int, int]:
        """(layer, head), each negative from the end, as non-negative indices."""
        return (checks.index(layer, self.n_layers, what="layer", owner=self.model, unit="layers"),
                checks.index(head, self.n_heads, what="head", owner=self.model, unit="heads"))

    def score(self, kind: str, layer: int, head: int) -> float:
        if kind not in ATTENTION_KINDS:
            raise InterpError(f"unknown attention kind {kind!r}: use {', '.join(ATTENTION_KINDS)}")
        li, hi = self.head_index(layer, head)
        return float(self.scores[kind][li, hi])

    def label(self, layer: int, head: int) -> str:
        li, hi = self.head_index(layer, head)
        return self.labels[li][hi]

    def heads(self, label: str) -> list[tuple[int, int]]:
        """Every (layer, head) with this label."""
        return [(layer, head) for layer, row in enumerate(self.labels)
                for head, got in enumerate(row) if got == label]

    def best(self, kind: str, k: int = 5) -> list[tuple[int, int]]:
        """The ``k`` heads with the highest score of ``kind``."""
        flat = np.argsort(-self.scores[kind], axis=None, kind="stable")[:k]
        layers, heads = np.unravel_index(flat, self.scores[kind].shape)
        return [(int(layer), int(head)) for layer, head in zip(layers, heads, strict=True)]

    def table(self, heads: Sequence[tuple[int, int]], mark: Sequence[tuple[int, int]] = ()) -> str:
        """One row per head: every score and the label; heads in ``mark`` flagged ``>``."""
        where = "the repeated random sequence" if self.prompt is None else repr(self.prompt)
        lines = [f"attention heads of {self.model} on {where} (induction on {self.n} seeded "
                 f"random tokens x 2, seed {self.seed})",
                 f"  {'head':>7}" + "".join(f"  {k:>14}" for k in ATTENTION_KINDS) + "  label"]
        for layer, head in heads:
            cells = "".join(f"  {self.scores[k][layer, head]:>14.3f}" for k in ATTENTION_KINDS)
            flag = ">" if (layer, head) in mark else " "
            lines.append(f"{flag} {f'L{layer}H{head}':>7}{cells}  {self.labels[layer][head]}")
        return "\n".join(lines)
