"""backends layer: splices: one forward pass in which chosen readers (a head's q/k/v input, an
MLP's input, the logits) see some writers (the embeddings, a head, an attention layer, an
MLP) as another run had them: edge ablation, as a circuit's faithfulness needs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import InterpError
from ..sites import Site

Writer = tuple[Site, "int | None"]
_SPLICES = itertools.count()


@dataclass(frozen=True, eq=False)
class Splice:
    """Cut edges (passed among a run's edits): each reader site's input gets, for each
    writer it cuts, that writer's ``reference`` output in place of this run's own.

    ``writers`` name the columns of ``reference`` [B, P, U, D] in the order the model runs
    them: (resid_pre@0, None) for the embeddings, (head_out@L, h) per head, (attn_out@L, None),
    (mlp_out@L, None). ``cut`` maps a reader site (q/k/v_input@L, mlp_input@L, the last
    layer's resid_post for the logits) to weights [n, U] (per head) or [U]: 1 cuts the edge
    from that writer, 0 keeps it. Only writers that run before a reader may be cut.
    """

    writers: tuple[Writer, ...]
    reference: Tensor
    cut: Mapping[Site, Tensor]

    _key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", f"splice:{next(_SPLICES)}")  # each one its own run
        if self.reference.dim() != 4 or self.reference.shape[2] != len(self.writers):
            raise InterpError(f"splice reference has shape {tuple(self.reference.shape)}: it "
                              f"must be [batch, positions, {len(self.writers)} writers, d_model]")

    @property
    def key(self) -> str:
        """Unique per splice: runs with different splices are never taken for each other."""
        return self._key

    @property
    def sites(self) -> set[Site]:
        """Every site the splice writes from or reads into."""
        return {site for site, _ in self.writers} | set(self.cut)


class SpliceRun:
    """One run's writer outputs, kept as their distance to the reference as the blocks run,
    and each reader's correction.

    A reader usually cuts nearly every earlier writer: its correction is then the running
    sum of all distances less the few it keeps, not a product with every weight."""

    def __init__(self, splice: Splice) -> None:
        self.splice = splice
        self.columns: dict[Site, list[int]] = {}
        for i, (site, _) in enumerate(splice.writers):
            self.columns.setdefault(site, []).append(i)
        self.diff = torch.zeros_like(splice.reference)  # reference - live, per writer
        self.total = torch.zeros_like(splice.reference[:, :, 0])  # their sum so far
        self.filled = 0

    def write(self, site: Site, value: Tensor) -> None:
        """Record a writer's output: [B, P, D], or [B, P, H, D] for head_out."""
        cols = self.columns.get(site)
        if cols is None:
            return
        span = slice(cols[0], cols[-1] + 1)
        live = value if value.dim() == 4 else value.unsqueeze(2)
        self.diff[:, :, span] = self.splice.reference[:, :, span] - live.to(self.diff.dtype)
        self.total += self.diff[:, :, span].sum(2)
        self.filled = max(self.filled, span.stop)

    def correction(self, site: Site, like: Tensor) -> Tensor | None:
        """What ``site``'s input gains from its cut edges ([B, P, n, D] or [B, P, D])."""
        weights = self.splice.cut.get(site)
        if weights is None:
            return None
        n = self.filled
        if bool(weights[..., n:].any()):
            raise InterpError(f"the splice cuts an edge into {site} from a writer that runs "
                              "after it: cut only edges from earlier writers")
        w = weights[..., :n].to(self.diff)
        rows = w if w.dim() == 2 else w.unsqueeze(0)
        if not bool(((rows == 0) | (rows == 1)).all()):  # general weights: one product
            out = torch.matmul(rows, self.diff[:, :, :n])
        else:  # all of them, less those not cut
            out = self.total.unsqueeze(2).repeat(1, 1, rows.shape[0], 1)
            row, col = (rows == 0).nonzero(as_tuple=True)
            if len(col):
                out.index_add_(2, row, self.diff[:, :, col], alpha=-1)
        return (out if w.dim() == 2 else out[:, :, 0]).to(like.dtype)
