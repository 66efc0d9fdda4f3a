"""probes layer: a model's component graph: writers (the embeddings, each head or attention
layer, each MLP), readers (each head's q, k and v input, each MLP's input, the logits), and
the edges between them through the residual stream.

Names are the project's part names: writers ``embed``, ``L9H6`` (or ``L9.attn`` where a norm
follows attention and heads do not write separately: Gemma 2/3, OLMo-2), ``L9.mlp``; readers
``L9H6.q``, ``L9H6.k``, ``L9H6.v`` (``L9KV2.k``/``.v`` for a grouped key/value head),
``L9.mlp``, ``logits``. An edge is ``writer->reader``, e.g. ``L5H1->L9H6.q``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch
from torch import Tensor

from ..backends.base import ModelInfo
from ..errors import InterpError
from ..sites import Site


@dataclass(frozen=True)
class Writer:
    """A node that adds to the residual stream: ``site`` (and ``head``) is its output."""

    name: str
    layer: int  # -1 for the embeddings
    site: Site
    head: int | None = None
    attention: bool = False


@dataclass(frozen=True)
class Reader:
    """A node's input from the residual stream: ``site`` (and ``head``) is where it is read."""

    name: str
    layer: int  # n_layers for the logits
    site: Site
    head: int | None = None
    node: str = ""  # the node the input belongs to (``L9H6`` for ``L9H6.q``)
    mlp: bool = False


@dataclass(frozen=True)
class Graph:
    """The writers and readers of a model, in the order it runs them, and its edges."""

    info: ModelInfo

    @cached_property
    def writers(self) -> tuple[Writer, ...]:
        info, out = self.info, [Writer("embed", -1, Site(0, "resid_pre"))]
        for layer in range(info.n_layers):
            if info.post_norm:
                out.append(Writer(f"L{layer}.attn", layer, Site(layer, "attn_out"),
                                  attention=True))
            else:
                out += [Writer(f"L{layer}H{h}", layer, Site(layer, "head_out"), h, True)
                        for h in range(info.n_heads)]
            out.append(Writer(f"L{layer}.mlp", layer, Site(layer, "mlp_out")))
        return tuple(out)

    @cached_property
    def readers(self) -> tuple[Reader, ...]:
        info, out = self.info, []
        grouped = info.n_kv_heads != info.n_heads
        for layer in range(info.n_layers):
            out += [Reader(f"L{layer}H{h}.q", layer, Site(layer, "q_input"), h, f"L{layer}H{h}")
                    for h in range(info.n_heads)]
            for kind in "kv":
                for h in range(info.n_kv_heads):
                    node = f"L{layer}KV{h}" if grouped else f"L{layer}H{h}"
                    site = Site(layer, "k_input" if kind == "k" else "v_input")
                    out.append(Reader(f"{node}.{kind}", layer, site, h, node))
            out.append(Reader(f"L{layer}.mlp", layer, Site(layer, "mlp_input"),
                              node=f"L{layer}.mlp", mlp=True))
        last = info.n_layers - 1
        out.append(Reader("logits", info.n_layers, Site(last, "resid_post"), node="logits"))
        return tuple(out)

    @cached_property
    def valid(self) -> np.ndarray:
        """[U, V] bool: writer u reaches reader v through the residual stream."""
        wl = np.array([w.layer for w in self.writers])[:, None]
        rl = np.array([r.layer for r in self.readers])[None, :]
        attn = np.array([w.attention for w in self.writers])[:, None]
        mlp = np.array([r.mlp for r in self.readers])[None, :]
        same_layer = (wl == rl) & attn & mlp & (not self.info.parallel)
        return np.asarray((wl < rl) | same_layer)

    @cached_property
    def edges(self) -> tuple[str, ...]:
        """Every edge's name, writer-major (the order of ``np.nonzero(valid)``)."""
        u, v = np.nonzero(self.valid)
        return tuple(f"{self.writers[i].name}->{self.readers[j].name}"
                     for i, j in zip(u, v, strict=True))

    @cached_property
    def index(self) -> dict[str, tuple[int, int]]:
        """Edge name -> (writer index, reader index)."""
        u, v = np.nonzero(self.valid)
        return {name: (int(i), int(j))
                for name, i, j in zip(self.edges, u, v, strict=True)}

    @cached_property
    def writer_sites_in_order(self) -> tuple[Site, ...]:
        """The writers' sites, each once, in writer order (head_out holds every head)."""
        return tuple(dict.fromkeys(w.site for w in self.writers))

    @cached_property
    def reader_sites_in_order(self) -> tuple[Site, ...]:
        """The readers' sites, each once, in reader order (q/k/v_input hold every head)."""
        return tuple(dict.fromkeys(r.site for r in self.readers))

    @property
    def splice_writers(self) -> tuple[tuple[Site, int | None], ...]:
        return tuple((w.site, w.head) for w in self.writers)

    def cuts(self, kept: list[tuple[int, int]]) -> dict[Site, Tensor]:
        """A splice's cut weights: every edge but ``kept``, per reader site ([n, U] or [U])."""
        cut = torch.from_numpy(self.valid.copy())
        for u, v in kept:
            cut[u, v] = False
        out: dict[Site, Tensor] = {}
        for site in self.reader_sites_in_order:
            cols = [j for j, r in enumerate(self.readers) if r.site == site]
            weights = cut[:, cols].T.float()  # [n, U]
            out[site] = weights if self.readers[cols[0]].head is not None else weights[0]
        return out

    def locate(self, edges: tuple[str, ...]) -> list[tuple[int, int]]:
        """Each edge's (writer, reader) indices, or one line naming an edge the model lacks."""
        out = []
        for edge in edges:
            if edge not in self.index:
                raise InterpError(unknown_edge(edge, self))
            out.append(self.index[edge])
        return out


def unknown_edge(edge: str, graph: Graph) -> str:
    """One line: why ``edge`` is not an edge of this model, with examples of ones that are."""
    writer, _, reader = edge.partition("->")
    names = {w.name for w in graph.writers}, {r.name for r in graph.readers}
    if writer not in names[0]:
        why = f"{writer!r} is not a writer of {graph.info.name}"
    elif reader not in names[1]:
        why = f"{reader!r} is not a reader of {graph.info.name}"
    else:
        why = f"{writer} runs after {reader} reads the residual stream"
    return (f"edge {edge!r}: {why}: write edges as writer->reader, e.g. "
            f"{graph.edges[0]!r} or {graph.edges[-1]!r}")


@lru_cache(maxsize=8)
def graph_of(info: ModelInfo) -> Graph:
    """A model's graph, built once per model (70,651 edge names for SmolLM2: 0.1 s)."""
    return Graph(info)
