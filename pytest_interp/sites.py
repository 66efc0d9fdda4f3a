"""Sites: places in a model, named in model terms (no torch; hook names live in the adapters).

Shapes (B = batch rows, P = positions, D = d_model, H = heads):

- resid_pre, resid_mid, resid_post, attn_out, mlp_out: [B, P, D]
- head_out: [B, P, H, D], each head's output written into the residual stream
  (``z_h @ W_O[h]``, without the output bias, as TransformerLens's ``hook_result``)
- attn_pattern: [B, H, P_query, P_key], softmaxed attention weights
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from .errors import SiteError

Component = Literal[
    "resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "head_out", "attn_pattern"
]
COMPONENTS: tuple[Component, ...] = get_args(Component)
# Sites an activation can be patched at, and added to (steering).
POSITION_SITES: tuple[Component, ...] = ("resid_pre", "resid_mid", "resid_post", "attn_out",
                                         "mlp_out")
PATCH_SITES: tuple[Component, ...] = (*POSITION_SITES, "head_out")
STEER_SITES: tuple[Component, ...] = POSITION_SITES


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
