"""base layer: sites: places in a model, named in model terms (no torch; hook names live in the
adapters).

Shapes (B = batch rows, P = positions, D = d_model, H = heads):

- resid_pre, resid_mid, resid_post, attn_out, mlp_out: [B, P, D]
- head_out: [B, P, H, D], each head's output written into the residual stream
  (``z_h @ W_O[h]``, without the output bias, as TransformerLens's ``hook_result``)
- attn_pattern: [B, H, P_query, P_key], softmaxed attention weights
- mlp_in: [B, P, D], the MLP's input after its norm (what a transcoder reads)
- q_input, k_input, v_input: [B, P, n, D], the residual stream as each head's query, key or
  value projection reads it, before the attention's norm (n = heads for queries, key/value
  heads for keys and values); an edit at one head reaches that head's projection only
- mlp_input: [B, P, D], the residual stream as the MLP reads it, before its norm; an edit
  reaches the MLP only, not the skip connection

The input sites are the downstream ends of a circuit's edges (TransformerLens's
``hook_q_input``/``hook_mlp_in`` with split inputs).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import SiteError

Component = Literal[
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "attn_pattern",
    "mlp_in", "q_input", "k_input", "v_input", "mlp_input",
]
COMPONENTS: tuple[Component, ...] = get_args(Component)
# Sites an activation can be patched at, and added to (steering).
POSITION_SITES: tuple[Component, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out",
                                         "mlp_out")
PATCH_SITES: tuple[Component, ...] = (*POSITION_SITES, "head_out")
STEER_SITES: tuple[Component, ...] = POSITION_SITES
# Per-node input copies of the residual stream (one head's q/k/v, one MLP).
INPUT_SITES: tuple[Component, ...] = ("q_input", "k_input", "v_input", "mlp_input")
HEAD_INPUTS: tuple[Component, ...] = ("q_input", "k_input", "v_input")


@dataclass(frozen=True, order=True)
class Site:
    """A place in the model: block ``layer`` (0-based, non-negative) and a component."""

    layer: int
    component: Component

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise SiteError(
                f"unknown site component {self.component!r}: use one of {', '.join(COMPONENTS)}"
            )
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            raise SiteError(f"site layer must be an int, got {self.layer!r}")

    def __str__(self) -> str:
        return f"{self.component}@{self.layer}"


def all_sites(n_layers: int, components: Iterable[Component] = COMPONENTS) -> tuple[Site, ...]:
    """Every (layer, component) site of a model with ``n_layers`` blocks."""
    comps = tuple(components)
    return tuple(Site(layer, c) for layer in range(n_layers) for c in comps)


PartKind = Literal["head", "attn", "mlp"]
PART_KINDS: tuple[PartKind, ...] = get_args(PartKind)
_PART_SITE: dict[str, Component] = {"head": "head_out", "attn": "attn_out", "mlp": "mlp_out"}
_PART = re.compile(r"L(-?\d+)(?:H(\d+)|\.(attn|mlp))")


@dataclass(frozen=True, order=True)
class Part:
    """A part of a model that can be ablated: one attention head (``L9H6``), a whole
    attention layer (``L9.attn``) or an MLP layer (``L9.mlp``). Negative layers count from
    the end until resolved against a model."""

    layer: int
    kind: PartKind
    head: int | None = None

    def __str__(self) -> str:
        return f"L{self.layer}H{self.head}" if self.kind == "head" else f"L{self.layer}.{self.kind}"

    @property
    def site(self) -> Site:
        """Where the part writes into the residual stream (head_out, attn_out or mlp_out)."""
        return Site(self.layer, _PART_SITE[self.kind])


def parse_part(value: object) -> Part:
    """``"L9H6"``, ``"L9.attn"``, ``"L9.mlp"`` or a (layer, head) pair, as a Part."""
    if isinstance(value, list | tuple) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        layer, head = value
        if head < 0:
            raise SiteError(f"head must be >= 0, got {head} in {tuple(value)}")
        return Part(layer, "head", head)
    match = _PART.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SiteError(f"cannot read {value!r} as a model part: write 'L9H6' (a head), "
                        "'L9.attn' (an attention layer), 'L9.mlp' (an MLP) or (9, 6)")
    layer, head, kind = match.groups()
    if head is not None:
        return Part(int(layer), "head", int(head))
    return Part(int(layer), kind)  # type: ignore[arg-type]
