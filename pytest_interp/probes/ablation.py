"""probes layer: ablation: a metric with parts of the model knocked out, batched one row per ablated
set.

A part (``pytest_interp.sites.Part``: a head, an attention layer, an MLP) is ablated by
replacing what it writes into the residual stream (head_out, attn_out or mlp_out) with zero,
with its mean over reference prompts (every position of every prompt), or with its value on
a corrupted prompt (resample ablation, position by position). Every (prompt, set) pair is one
row of a batched forward pass that starts at the set's lowest layer from the clean run's
residual stream (blocks below compute the clean run for every row), with only the last
position's logits computed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from .. import metrics
from ..backends.base import Edit, ModelInfo, Start, Tokens
from ..errors import InterpError
from ..metrics import Metric
from ..results import AblationResult, token_position
from ..sites import PART_KINDS, Part, Site, parse_part
from .batching import by_length, paired_tokens
from .runner import Runner

Method = Literal["zero", "mean", "resample"]
METHODS: tuple[Method, ...] = ("zero", "mean", "resample")
ROWS = 64  # (prompt, set) rows per forward pass


@dataclass(frozen=True)
class Case:
    """One prompt to ablate on: what the metric reads, and the corrupted prompt resample
    ablation takes values from."""

    prompt: str
    answer: str | None
    foil: str | None
    corrupted: str | None = None
    positions: tuple[int | str, ...] | None = None  # None: every position


def resolve(part: Part, info: ModelInfo) -> Part:
    """``part`` with a non-negative layer, checked against the model (one line if not)."""
    layer = info.check_layer(part.layer)
    if part.head is not None:
        info.check_head(part.head)
    return Part(layer, part.kind, part.head)


def universe(kinds: Collection[str], info: ModelInfo) -> list[Part]:
    """Every part of the given kinds the model has, in (layer, kind, head) order."""
    parts: list[Part] = []
    for layer in range(info.n_layers):
        if "attn" in kinds:
            parts.append(Part(layer, "attn"))
        if "head" in kinds:
            parts += [Part(layer, "head", h) for h in range(info.n_heads)]
        if "mlp" in kinds:
            parts.append(Part(layer, "mlp"))
    return sorted(parts)


def complement(parts: Collection[Part], info: ModelInfo) -> frozenset[Part]:
    """Every part of the kinds in ``parts`` that is not in ``parts``."""
    return frozenset(universe({p.kind for p in parts}, info)) - frozenset(parts)


def random_sets(parts: Collection[Part], n: int, seed: int,
                info: ModelInfo) -> list[frozenset[Part]]:
    """``n`` seeded random sets with as many parts of each kind as ``parts`` has."""
    rng = np.random.default_rng(seed)
    count: dict[str, int] = defaultdict(int)
    for part in parts:
        count[part.kind] += 1
    sets = []
    for _ in range(n):
        chosen: list[Part] = []
        for kind in sorted(count):
            pool = universe({kind}, info)
            chosen += [pool[i] for i in rng.choice(len(pool), size=count[kind], replace=False)]
        sets.append(frozenset(chosen))
    return sets


@torch.inference_mode()
def part_means(model: Runner, prompts: Sequence[str],
               parts: Collection[Part]) -> dict[Part, torch.Tensor]:
    """Each part's output [D] averaged over every position of every prompt (batched)."""
    if not prompts:
        raise InterpError("mean ablation needs reference prompts: pass reference=[...]")
    sites = {p.site for p in parts}
    tokens = [model.tokens(p) for p in prompts]
    sums: dict[Part, torch.Tensor] = {}
    count = 0
    for group in by_length(tokens):
        rows = model.rows_per_pass(tokens[group[0]].length, len(group), ROWS)
        for lo in range(0, len(group), rows):
            chunk = [tokens[i] for i in group[lo:lo + rows]]
            run = model.forward(Tokens.stack(chunk), read=sites, logits_to_keep=1)
            count += len(chunk) * chunk[0].length
            for part in parts:
                act = run.acts[part.site]
                act = act[:, :, part.head] if part.head is not None else act  # [B, P, D]
                total = act.float().sum((0, 1))
                sums[part] = sums[part] + total if part in sums else total
    return {part: total / count for part, total in sums.items()}


@torch.inference_mode()
def ablated_metrics(
    model: Runner, cases: Sequence[Case], sets: Sequence[Collection[Part]], *,
    method: Method, metric: Metric, means: dict[Part, torch.Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The metric on each case's clean run [cases], and with each set ablated
    [cases, sets]. Parts must be resolved; ``means`` is needed for ``method="mean"``."""
    info = model.info
    if method == "mean" and means is None:
        raise InterpError("mean ablation needs the parts' means (part_means)")
    clean_values = np.zeros(len(cases))
    values = np.full((len(cases), len(sets)), np.nan)
    tokens = [model.tokens(c.prompt) for c in cases]
    for case in cases:
        if method == "resample":
            if case.corrupted is None:
                raise InterpError("resample ablation needs corrupted=: the prompt the "
                                  "ablated parts take their values from")
            paired_tokens(model, case.prompt, case.corrupted)  # equal lengths, or one error
    all_parts = {p for s in sets for p in s}
    sites = {p.site for p in all_parts}
    # Rows by lowest ablated layer, so a pass can start high.
    def lowest(j: int) -> int:
        return min((p.layer for p in sets[j]), default=info.n_layers)

    order = sorted(range(len(sets)), key=lowest)
    for group in by_length(tokens):
        batch = Tokens.stack([tokens[i] for i in group])
        rows = [(i, j) for j in order for i in group if sets[j]]  # empty sets: clean
        size = model.rows_per_pass(batch.length, len(rows), ROWS)  # within --interp-memory
        chunks = [rows[lo:lo + size] for lo in range(0, len(rows), size)]
        starts = {lowest(chunk[0][1]) for chunk in chunks}
        read = {Site(layer, "resid_pre") for layer in starts}
        clean = model.forward(batch, read=read, logits_to_keep=1)
        corrupted = None
        if method == "resample":
            corrupted = model.forward(Tokens.stack([model.tokens(cases[i].corrupted or "")
                                                    for i in group]),
                                      read=sites, logits_to_keep=1)
        where = {i: row for row, i in enumerate(group)}
        measures = {}
        for i in group:
            case = cases[i]
            measures[i] = metrics.build(metric, model.vocab, case.answer, case.foil,
                                        clean.logits[where[i], -1])
            clean_values[i] = float(measures[i](clean.logits[where[i]:where[i] + 1, -1])[0])
        positions = {i: case_positions(tokens[i], cases[i]) for i in group}
        for j, chosen in enumerate(sets):
            if not chosen:
                values[group, j] = clean_values[group]
        for chunk in chunks:
            first = lowest(chunk[0][1])
            edits = _edits(chunk, sets, positions, method, means, corrupted, where)
            run = model.forward(
                Tokens.stack([tokens[i] for i, _ in chunk]), edits=edits, logits_to_keep=1,
                start=Start(first, clean.acts[Site(first, "resid_pre")][
                    [where[i] for i, _ in chunk]]))
            for row, (i, j) in enumerate(chunk):
                values[i, j] = float(measures[i](run.logits[row:row + 1, -1])[0])
    return clean_values, values


def case_positions(tokens: Tokens, case: Case) -> tuple[int, ...] | None:
    if case.positions is None:
        return None
    return tuple(sorted({token_position(tokens.strs[0], p, case.prompt)
                         for p in case.positions}))


def _edits(chunk: Sequence[tuple[int, int]], sets: Sequence[Collection[Part]],
           positions: dict[int, tuple[int, ...] | None], method: Method,
           means: dict[Part, torch.Tensor] | None, corrupted: object,
           where: dict[int, int]) -> list[Edit]:
    """One replace edit per (part, case) with every chunk row that ablates it."""
    rows: dict[tuple[Part, int], list[int]] = defaultdict(list)
    for row, (i, j) in enumerate(chunk):
        for part in sets[j]:
            rows[part, i].append(row)
    edits = []
    for (part, i), ablating in sorted(rows.items()):
        pos = positions[i]
        if method == "zero":
            value = torch.zeros(())
        elif method == "mean":
            assert means is not None
            value = means[part]
        else:
            act = corrupted.acts[part.site][where[i]]  # type: ignore[attr-defined]
            act = act[:, part.head] if part.head is not None else act  # [P, D]
            value = act if pos is None else act[list(pos)]
        edits.append(Edit(part.site, value, positions=pos, rows=tuple(ablating),
                          head=part.head))
    return edits


@dataclass(frozen=True)
class Ablation:
    """What an ablation is asked (the probe's one argument and its memo key): per case, the
    metric with ``parts`` ablated (``keep``: every other part of their kinds ablated
    instead), and with each of ``control`` seeded random sets of as many parts of each kind
    in their place. ``reference``: the prompts mean ablation averages over (None: the cases'
    prompts)."""

    cases: tuple[Case, ...]
    parts: tuple[Part, ...]
    keep: bool = False
    method: Method = "mean"
    metric: Metric = "logit_diff"
    reference: tuple[str, ...] | None = None
    control: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cases", tuple(self.cases))
        object.__setattr__(self, "parts", tuple(self.parts))
        if self.reference is not None:
            object.__setattr__(self, "reference", tuple(self.reference))


@dataclass(frozen=True)
class Ablate:
    """What ``interp_model.ablate`` is asked on one prompt: the parts in ``ablate`` ablated,
    or every part of their kinds but those in ``keep`` (heads ``"L9H6"`` or (9, 6),
    attention layers ``"L9.attn"``, MLPs ``"L9.mlp"``); the metric at the last position
    (logit diff with a foil, else log P(answer)); ``positions`` restricts the ablation;
    ``method``: ``"zero"``, ``"mean"`` (over ``reference`` prompts, default this prompt, every
    position) or ``"resample"`` (the value on ``corrupted``); ``control=N`` seeded random
    sets of as many parts of each kind."""

    prompt: str
    answer: str
    foil: str | None = None
    ablate: tuple[object, ...] | None = None
    keep: tuple[object, ...] | None = None
    method: Method = "mean"
    corrupted: str | None = None
    reference: tuple[str, ...] | None = None
    positions: tuple[int | str, ...] | None = None
    metric: Metric | None = None
    control: int = 0
    seed: int = 0

    def spec(self) -> Ablation:
        """The probe's spec (parts parsed, the metric's default chosen, checked)."""
        if (self.ablate is None) == (self.keep is None):
            raise InterpError("pass ablate=[parts] (they are necessary) or keep=[parts] (they "
                              "are sufficient), one of them")
        given = self.ablate if self.ablate is not None else self.keep
        parts = tuple(parse_part(p) for p in given or ())
        metric = self.metric if self.metric is not None else \
            ("logit_diff" if self.foil else "logprob")
        metrics.check(metric, self.foil)
        case = Case(self.prompt, self.answer, self.foil, self.corrupted,
                    None if self.positions is None else tuple(self.positions))
        return Ablation((case,), parts, keep=self.keep is not None, method=self.method,
                        metric=metric, reference=self.reference, control=self.control,
                        seed=self.seed)


def ablation(model: Runner, spec: Ablation) -> list[AblationResult]:
    """The results ``spec`` asks for, one per case, all rows batched."""
    cases, parts, keep, method, metric, reference, control, seed = (
        spec.cases, spec.parts, spec.keep, spec.method, spec.metric, spec.reference,
        spec.control, spec.seed)
    info = model.info
    if not parts:
        raise InterpError("name at least one part to ablate, e.g. 'L9H6', 'L9.attn', 'L9.mlp'")
    chosen = frozenset(resolve(p, info) for p in parts)
    controls = random_sets(chosen, control, seed, info)
    sets = [chosen, *controls]
    if keep:
        sets = [complement(s, info) for s in sets]
    means = None
    if method == "mean":
        prompts = tuple(reference) if reference is not None else tuple(
            dict.fromkeys(c.prompt for c in cases))
        needed = frozenset(p for s in sets for p in s)
        means = part_means(model, prompts, needed)
    clean, values = ablated_metrics(model, cases, sets, method=method, metric=metric,
                                    means=means)
    names = tuple(str(p) for p in sorted(chosen))
    control_names = tuple(tuple(str(p) for p in sorted(s)) for s in controls)
    return [AblationResult(
        model=info.name, prompt=case.prompt, answer=case.answer, foil=case.foil, parts=names,
        method=method, mode="sufficiency" if keep else "necessity", clean=float(clean[i]),
        ablated=float(values[i, 0]), controls=tuple(float(v) for v in values[i, 1:]),
        control_sets=control_names, metric=metrics.label(metric),
    ) for i, case in enumerate(cases)]


@dataclass(frozen=True, eq=False)
class AblationSweep:
    """The metric with each part of one kind ablated in turn: ``values`` [layers, heads] for
    heads, [layers] for attention layers and MLPs; ``drop`` is clean - ablated."""

    model: str
    prompt: str
    kind: str
    method: str
    metric: str
    clean: float
    values: np.ndarray

    @property
    def drop(self) -> np.ndarray:
        return self.clean - self.values

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` parts whose ablation drops the metric most, with their drops."""
        flat = self.drop.reshape(len(self.drop), -1)
        order = np.argsort(-flat, axis=None, kind="stable")[:k]
        out = []
        for index in order:
            layer, col = divmod(int(index), flat.shape[1])
            name = f"L{layer}H{col}" if self.kind == "head" else f"L{layer}.{self.kind}"
            out.append((name, float(flat[layer, col])))
        return out


@dataclass(frozen=True)
class Sweep:
    """What an ablation sweep is asked: each part of ``kind`` (head, attn, mlp) ablated in
    turn on one prompt, one batched row per part; the other fields as in ``Ablate``."""

    prompt: str
    answer: str
    foil: str | None = None
    kind: str = "head"
    method: Method = "mean"
    corrupted: str | None = None
    reference: tuple[str, ...] | None = None
    positions: tuple[int | str, ...] | None = None
    metric: Metric | None = None

    def __post_init__(self) -> None:
        for name in ("reference", "positions"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.metric is None:
            object.__setattr__(self, "metric", "logit_diff" if self.foil else "logprob")

    @property
    def case(self) -> Case:
        return Case(self.prompt, self.answer, self.foil, self.corrupted, self.positions)


def ablation_sweep(model: Runner, spec: Sweep) -> AblationSweep:
    """Ablate each part of ``spec.kind`` in turn: one batched row per part."""
    case, kind, method, reference = spec.case, spec.kind, spec.method, spec.reference
    metric: Metric = spec.metric or "logit_diff"
    info = model.info
    if kind not in PART_KINDS:
        raise InterpError(f"kind must be one of {', '.join(PART_KINDS)}, got {kind!r}")
    parts = universe({kind}, info)
    means = None
    if method == "mean":
        means = part_means(model, tuple(reference) if reference is not None else (case.prompt,),
                           parts)
    clean, values = ablated_metrics(model, [case], [frozenset({p}) for p in parts],
                                    method=method, metric=metric, means=means)
    shape = (info.n_layers, info.n_heads) if kind == "head" else (info.n_layers,)
    return AblationSweep(model=info.name, prompt=case.prompt, kind=kind, method=method,
                         metric=metrics.label(metric), clean=float(clean[0]),
                         values=values[0].reshape(shape))
