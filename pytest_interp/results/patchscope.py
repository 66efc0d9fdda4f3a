"""results layer: patchscope readouts per (source layer, target layer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..errors import InterpError, SiteError
from ..record import derived


@dataclass(frozen=True, eq=False)
class PatchscopeResult:
    """Patchscope readouts: the source prompt's hidden state at (source layer, position)
    patched into the target prompt at (target layer, position), decoded greedily.

    One row per (source layer, target layer) pair; layers are non-negative block indices
    whose output (resid_post) is read and overwritten.
    """

    model: str
    source: str
    source_tokens: tuple[str, ...]
    source_position: int
    target: str
    target_tokens: tuple[str, ...]
    target_position: int
    pairs: tuple[tuple[int, int], ...]  # (source layer, target layer) per row
    continuations: tuple[str, ...]  # decoded generated text per row
    token_ids: tuple[tuple[int, ...], ...]  # generated ids per row
    expected: str | None = None  # the token whose first-step probability is kept
    expected_prob: tuple[float, ...] | None = None  # per row
    margins: tuple[tuple[float, ...], ...] | None = None  # per row, per generated step
    tokens: tuple[tuple[str, ...], ...] | None = None  # per row: each generated token

    def row(self, layer: int, target_layer: int | None = None) -> int:
        """The row of (source ``layer``, ``target_layer``); target defaults to the same layer,
        else to the only target layer swept for that source layer."""
        rows = [i for i, (s, _) in enumerate(self.pairs) if s == layer]
        if target_layer is not None:
            rows = [i for i in rows if self.pairs[i][1] == target_layer]
        elif len(rows) > 1:
            rows = [i for i in rows if self.pairs[i][1] == layer] or rows
        if len(rows) != 1:
            swept = ", ".join(f"{s}->{t}" for s, t in self.pairs)
            want = f"{layer}->{'?' if target_layer is None else target_layer}"
            raise SiteError(
                f"no single patchscope row for layers {want} (swept: {swept}): pass a swept "
                "source layer and its target_layer"
            )
        return rows[0]

    def text(self, layer: int, target_layer: int | None = None) -> str:
        """The decoded continuation for (source ``layer``, ``target_layer``)."""
        return self.continuations[self.row(layer, target_layer)]

    def prob(self, layer: int, target_layer: int | None = None) -> float:
        """P(expected token) at the first generated position for that pair."""
        if self.expected_prob is None:
            raise InterpError("no expected token was given: pass expected=TOKEN to the probe")
        return self.expected_prob[self.row(layer, target_layer)]

    def texts(self) -> dict[tuple[int, int], str]:
        return dict(zip(self.pairs, self.continuations, strict=True))

    def select(self, layers: Sequence[int]) -> PatchscopeResult:
        """The same readout narrowed to some source layers (their rows, in order)."""
        keep = [i for i, (s, _) in enumerate(self.pairs) if s in set(layers)]
        if not keep:
            raise SiteError(f"none of the source layers {list(layers)} was swept (swept: "
                            f"{sorted({s for s, _ in self.pairs})})")

        def pick(values: tuple[Any, ...] | None) -> Any:
            return None if values is None else tuple(values[i] for i in keep)

        narrowed = replace(self, pairs=pick(self.pairs), continuations=pick(self.continuations),
                           token_ids=pick(self.token_ids), expected_prob=pick(self.expected_prob),
                           margins=pick(self.margins), tokens=pick(self.tokens))
        return derived(narrowed, self, lambda r: r.select(layers))

    def table(self, failing: Sequence[int] = ()) -> str:
        """Layer -> continuation, one row per pair; rows in ``failing`` are marked ``>``."""
        src = self.source_tokens[self.source_position]
        tgt = self.target_tokens[self.target_position]
        lines = [
            f"patchscope of {src!r} (position {self.source_position}) in {self.source!r} -> "
            f"{self.target!r} at {tgt!r} (position {self.target_position})",
            f"  {'source':>6}  {'target':>6}"
            + (f"  {'P(' + repr(self.expected) + ')':>10}" if self.expected_prob else "")
            + "  continuation",
        ]
        for i, ((s, t), text) in enumerate(zip(self.pairs, self.continuations, strict=True)):
            prob = f"  {self.expected_prob[i]:>10.4f}" if self.expected_prob else ""
            lines.append(f"{'>' if i in failing else ' '} {s:>6}  {t:>6}{prob}  {text!r}")
        return "\n".join(lines)
