"""probes layer: activation patching, written once against the Runner interface.

A patch runs the corrupted prompt with one clean activation written in. Sweeps are batched:
all patches at layer L are rows of one forward pass that starts at block L from the corrupted
run's resid_pre (blocks below L would compute the same thing for every row), each row carries
its own edit, and only last-position logits are computed. Only the suffix is recomputed: a
patch at position p leaves every position before p as in the corrupted run (causality), so
its row computes positions p.. on top of the corrupted run's key/value cache of the positions
before (patches are grouped into passes by where they begin, see ``_buckets``). A patch whose
clean value equals the corrupted one bit for bit (every position before the first differing
token) cannot change the run: it gets the corrupted metric without a forward pass. Clean and
corrupted runs are memoised by the model.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .. import metrics
from ..backends.base import Edit, Start, Tokens
from ..errors import InterpError
from ..metrics import Metric
from ..progress import progress
from ..results import PatchingResult, token_position
from ..sites import PATCH_SITES, Component, Site, all_sites
from .batching import by_length, paired_tokens
from .runner import Runner


@dataclass(frozen=True)
class Patching:
    """What an activation-patching sweep is asked: the probe's one argument and its memo key.

    Patch each clean activation of ``site`` into the corrupted run: every (layer, position),
    or for head_out every (layer, head, position) (``per_position=False``: (layer, head), the
    head patched at every position at once). ``layers`` / ``positions`` (ints, negative from
    the end, or token strings of the clean prompt) restrict the sweep; so does ``cells``,
    (layer, column) pairs of the grid with its columns flattened (head * positions + position
    for head_out by position). Cells left out are NaN. ``metric`` (see
    ``pytest_interp.metrics``) is read at the last position. ``method="attribution"``
    estimates the grid to first order from one backward pass; ``verify_top_k=K`` then
    patches its K largest cells exactly."""

    clean: str
    corrupted: str
    answer: str | None = None
    foil: str | None = None
    site: Component = "resid_pre"
    per_position: bool = True
    layers: tuple[int, ...] | None = None
    positions: tuple[int | str, ...] | None = None
    metric: Metric = "logit_diff"
    method: Literal["exact", "attribution"] = "exact"
    verify_top_k: int = 0
    cells: frozenset[tuple[int, int]] | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("layers", "positions"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        if self.cells is not None:
            object.__setattr__(self, "cells", frozenset(self.cells))
        object.__setattr__(self, "per_position", self.per_position or self.site != "head_out")


@torch.inference_mode()
def activation_patching(model: Runner, spec: Patching) -> PatchingResult:
    """The exact sweep ``spec`` asks for, batched (see the module docstring)."""
    clean, corrupted, answer, foil, site = spec.clean, spec.corrupted, spec.answer, spec.foil, \
        spec.site
    per_position, layers, positions, metric, cells = spec.per_position, spec.layers, \
        spec.positions, spec.metric, spec.cells
    if site not in PATCH_SITES:
        raise InterpError(f"site {site!r} cannot be patched: use one of {', '.join(PATCH_SITES)}")
    info = model.info
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    n_layers, n_pos = info.n_layers, clean_tokens.length
    clean_run = model.run(clean_tokens, read=all_sites(n_layers, (site,)))
    corrupted_run = model.run(corrupted_tokens,
                              read=all_sites(n_layers, tuple({"resid_pre", site})))
    measure = metrics.build(metric, model.vocab, answer, foil, clean_run.logits[0, -1])

    def metric_of(logits: torch.Tensor) -> torch.Tensor:
        return measure(logits[:, -1])

    heads = site == "head_out"
    columns: list[tuple[int | None, int | None]]  # (head, position) per patched column
    if heads and per_position:
        columns = [(h, p) for h in range(info.n_heads) for p in range(n_pos)]
    elif heads:
        columns = [(h, None) for h in range(info.n_heads)]
    else:
        columns = [(None, p) for p in range(n_pos)]
    corrupted_metric = float(metric_of(corrupted_run.logits)[0])
    swept_layers = range(n_layers) if layers is None else sorted(
        {info.check_layer(layer) for layer in layers})
    keep = None if positions is None else {
        token_position(clean_tokens.strs[0], p, clean) for p in positions}
    swept = [i for i, (_, pos) in enumerate(columns) if keep is None or pos is None or pos in keep]
    values = np.full((n_layers, len(columns)), np.nan)
    todo: list[_Patch] = []  # patches that change something
    for layer in swept_layers:
        values[layer, swept] = corrupted_metric
        if cells is not None:
            values[layer, [c for c in swept if (layer, c) not in cells]] = np.nan
        clean_act = clean_run.acts[Site(layer, site)][0]  # [P, D] or [P, H, D]
        corrupted_act = corrupted_run.acts[Site(layer, site)][0]
        for col in swept:
            if cells is not None and (layer, col) not in cells:
                continue
            head, pos = columns[col]
            index = (slice(None) if pos is None else pos, *(() if head is None else (head,)))
            value = clean_act[index]
            if torch.equal(value, corrupted_act[index]):
                continue
            begin = pos if pos is not None else _first_difference(value, corrupted_act[index])
            todo.append(_Patch(layer, col, begin, pos, head, value))
    prefixes = _Prefixes(model, corrupted_tokens)
    rows = model.rows_per_pass(n_pos, len(todo), spec.batch_size)  # within --interp-memory
    passes = _passes(todo, n_layers, n_pos, rows)
    for start, begin, chunk in progress(passes, total=len(passes), desc=f"{site} patching"):
        edits = [Edit(Site(p.layer, site), p.value if p.pos is not None else p.value[begin:],
                      positions=None if p.pos is None else (p.pos - begin,), head=p.head,
                      rows=(row,)) for row, p in enumerate(chunk)]
        base = corrupted_run.acts[Site(start, "resid_pre")]
        run = model.forward(
            corrupted_tokens.slice(begin).repeat(len(chunk)), edits=edits, logits_to_keep=1,
            start=Start(start, base[:, begin:].expand(len(chunk), -1, -1)),
            past=prefixes.get(begin, len(chunk)),
        )
        measured = metric_of(run.logits).float().cpu().numpy()
        for p, value in zip(chunk, measured, strict=True):
            values[p.layer, p.col] = value
    patched = values.reshape(n_layers, info.n_heads, n_pos) if heads and per_position else values
    return PatchingResult(
        model=info.name, site=site, clean=clean, corrupted=corrupted, answer=answer, foil=foil,
        clean_tokens=clean_tokens.strs[0], corrupted_tokens=corrupted_tokens.strs[0],
        clean_logit_diff=float(metric_of(clean_run.logits)[0]),
        corrupted_logit_diff=corrupted_metric,
        patched=patched, heads=heads, per_position=per_position or not heads,
        metric=metrics.label(metric),
    )


@dataclass(frozen=True, eq=False)
class _Patch:
    """One patch of a sweep: its layer and grid column, the first position it changes, and
    its value."""

    layer: int
    col: int
    begin: int
    pos: int | None
    head: int | None
    value: torch.Tensor


def _first_difference(value: torch.Tensor, corrupted: torch.Tensor) -> int:
    """The first position (dim 0) at which a patch over every position changes anything."""
    differs = (value != corrupted).reshape(value.shape[0], -1).any(1)
    return int(differs.nonzero()[0, 0])


FORWARD_COST = 64
"""The fixed cost of one forward pass, in rows x positions computed through every block. On
CPU (SmolLM2, both backends) a pass's overhead alone is about 30-40 such rows; 64, which also
counts the work a pass saves by sharing the cache, was fastest of 8-512 on bench_patching."""
MAX_BAND = 16  # layers one pass may span


def _passes(patches: Sequence[_Patch], n_layers: int, n_pos: int,
            batch_size: int) -> list[tuple[int, int, list[_Patch]]]:
    """Patches grouped into forward passes (start layer, begin position, rows).

    Causality and depth make most of each patched run equal to the corrupted run: a pass
    starts at its lowest patched layer from the corrupted residual stream and computes only
    the positions from its earliest patch on, the rest coming from the corrupted run's
    key/value cache. A pass over a band of layers and a range of positions recomputes some of
    that for its other rows; fewer passes cost less overhead. The grouping minimises rows x
    positions x blocks computed plus ``FORWARD_COST`` per pass (blocks in units of the whole
    model): a dynamic programme over contiguous layer bands, each split by position."""
    if not patches:
        return []
    layers = sorted({p.layer for p in patches})
    counts = np.zeros((len(layers) + 1, n_pos))  # cumulative patches per begin, by layer
    for p in patches:
        counts[layers.index(p.layer) + 1, p.begin] += 1
    counts = counts.cumsum(0)
    best = [0.0] * (len(layers) + 1)  # best[j]: cost of the first j layers
    plan: list[tuple[int, list[int]]] = [(0, [])] * (len(layers) + 1)
    for j in range(1, len(layers) + 1):
        best[j] = float("inf")
        for i in range(max(0, j - MAX_BAND), j):  # a band of layers[i:j]
            depth = (n_layers - layers[i]) / n_layers
            cost, cuts = _split(counts[j] - counts[i], n_pos, batch_size)
            if best[i] + cost * depth < best[j]:
                best[j], plan[j] = best[i] + cost * depth, (i, cuts)
    groups: list[tuple[int, int, list[_Patch]]] = []
    j = len(layers)
    while j > 0:
        i, cuts = plan[j]
        band = [p for p in patches if layers[i] <= p.layer < (
            layers[j] if j < len(layers) else n_layers)]
        for lo, hi in zip(cuts, [*cuts[1:], n_pos], strict=True):
            members = sorted((p for p in band if lo <= p.begin < hi),
                             key=lambda p: (p.begin, p.layer, p.col))
            if members:
                begin = members[0].begin
                groups += [(layers[i], begin, members[k:k + batch_size])
                           for k in range(0, len(members), batch_size)]
        j = i
    return groups[::-1]


def _split(count: np.ndarray, n_pos: int, batch_size: int) -> tuple[float, list[int]]:
    """The cheapest split of patches (``count`` per begin position) into position ranges,
    each one pass from its earliest begin: (cost, the ranges' first positions)."""
    starts = np.flatnonzero(count)
    rows = np.concatenate([[0.0], np.cumsum(count[starts])])
    best = np.zeros(len(starts) + 1)
    cut = np.zeros(len(starts) + 1, dtype=int)
    for j in range(1, len(starts) + 1):
        i = np.arange(1, j + 1)  # the last range covers starts[i-1 .. j-1]
        n = rows[j] - rows[i - 1]
        cost = best[i - 1] + np.ceil(n / batch_size) * FORWARD_COST + n * (n_pos - starts[i - 1])
        k = int(cost.argmin())
        best[j], cut[j] = cost[k], k
    cuts = []
    j = len(starts)
    while j > 0:
        cuts.append(int(starts[cut[j]]))
        j = int(cut[j])
    return float(best[-1]), cuts[::-1]


class _Prefixes:
    """The corrupted run's key/value cache of its first ``begin`` positions, one forward pass
    per ``begin``, handed out as fresh copies (a run extends the cache it is given)."""

    def __init__(self, model: Runner, tokens: Tokens) -> None:
        self.model, self.tokens = model, tokens
        self.caches: dict[int, object] = {}

    def get(self, begin: int, rows: int) -> object:
        if begin == 0:
            return None
        if begin not in self.caches:
            self.caches[begin] = self.model.forward(self.tokens.slice(0, begin), keep_past=True,
                                                    logits_to_keep=1).past
        cache = copy.deepcopy(self.caches[begin])
        cache.batch_repeat_interleave(rows)  # type: ignore[attr-defined]
        return cache


@dataclass(frozen=True)
class Cell:
    """One patch of a dataset row: clean/corrupted prompts, answer/foil, and where."""

    clean: str
    corrupted: str
    answer: str | None
    foil: str | None
    site: Component
    layer: int
    position: int | str | None  # None: every position (head_out by head)
    head: int | None
    metric: Metric = "logit_diff"


@torch.inference_mode()
def patch_cells(model: Runner, cells: Sequence[Cell]) -> list[PatchingResult]:
    """One patch per row, batched: per token length, one clean and one corrupted forward,
    then one patched forward from the layer up. Each result is the row's sweep restricted to
    its cell (NaN elsewhere), as ``activation_patching(layers=[L], positions=[p])`` gives."""
    info = model.info
    pairs = [paired_tokens(model, c.clean, c.corrupted) for c in cells]
    out: list[PatchingResult | None] = [None] * len(cells)
    for group in by_length([clean for clean, _ in pairs]):
        for lo in range(0, len(group), 64):
            chunk = group[lo:lo + 64]
            site = Site(info.check_layer(cells[chunk[0]].layer), cells[chunk[0]].site)
            if any(Site(info.check_layer(cells[i].layer), cells[i].site) != site
                   for i in chunk):
                raise InterpError("rows of one patching dataset must share site and layer")
            clean = Tokens.stack([pairs[i][0] for i in chunk])
            corrupted = Tokens.stack([pairs[i][1] for i in chunk])
            # Memoised, with every layer read: other cells of these prompts (another
            # marker, another layer) reuse both runs.
            clean_run = model.run(clean, read=all_sites(info.n_layers, (site.component,)),
                                  logits_to_keep=1)
            corrupted_run = model.run(corrupted, read=all_sites(info.n_layers, ("resid_pre",)),
                                      logits_to_keep=1)
            edits, where = [], []
            for row, i in enumerate(chunk):
                cell = cells[i]
                pos = None if cell.position is None else token_position(
                    pairs[i][0].strs[0], cell.position, cell.clean)
                index = (slice(None) if pos is None else pos,
                         *(() if cell.head is None else (cell.head,)))
                edits.append(Edit(site, clean_run.acts[site][row][index],
                                  positions=None if pos is None else (pos,), head=cell.head,
                                  rows=(row,)))
                where.append(pos)
            patched = model.forward(
                corrupted, edits=edits, logits_to_keep=1,
                start=Start(site.layer, corrupted_run.acts[Site(site.layer, "resid_pre")]))
            for row, i in enumerate(chunk):
                cell = cells[i]
                measure = metrics.build(cell.metric, model.vocab, cell.answer, cell.foil,
                                        clean_run.logits[row, -1])
                clean_ld, corrupted_ld, patched_ld = (
                    float(measure(x.logits[row:row + 1, -1])[0])
                    for x in (clean_run, corrupted_run, patched))
                out[i] = _one_cell(model, cell, pairs[i], site.layer, where[row], clean_ld,
                                   corrupted_ld, patched_ld)
    return [r for r in out if r is not None]


def _one_cell(model: Runner, cell: Cell, pair: tuple[Tokens, Tokens], layer: int,
              pos: int | None, clean: float, corrupted: float, patched: float) -> PatchingResult:
    info = model.info
    n_pos = pair[0].length
    heads = cell.site == "head_out"
    per_position = not heads or pos is not None
    shape = ((info.n_layers, info.n_heads, n_pos) if heads and per_position else
             (info.n_layers, info.n_heads) if heads else (info.n_layers, n_pos))
    grid = np.full(shape, np.nan)
    grid[(layer, *(() if cell.head is None else (cell.head,)), *(() if pos is None else (pos,)))] \
        = patched
    return PatchingResult(
        model=info.name, site=cell.site, clean=cell.clean, corrupted=cell.corrupted,
        answer=cell.answer, foil=cell.foil, clean_tokens=pair[0].strs[0],
        corrupted_tokens=pair[1].strs[0], clean_logit_diff=clean, corrupted_logit_diff=corrupted,
        patched=grid, heads=heads, per_position=per_position, metric=metrics.label(cell.metric))
