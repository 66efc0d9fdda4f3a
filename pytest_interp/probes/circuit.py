"""probes layer: circuits: edge attribution patching (EAP; Syed et al. 2023) and its
integrated-gradients variant (EAP-IG; Hanna et al. 2024), and a circuit's faithfulness.

An edge u->v's score is ``(a_u(corrupted) - a_u(clean)) . d metric / d input_v``, summed over
positions and averaged over rows: the metric's change, to first order, when v's input takes
u's corrupted value. Each reader's gradient is that of a zero added at its input site (q/k/v
per head, the MLP's input, the logits), so one corrupted forward and one clean forward and
backward give every edge. EAP-IG averages the gradients over ``steps`` runs whose embeddings
lie at ``k / steps`` (k = 1..steps) of the way from corrupted to clean: ``steps=1`` is EAP.

Faithfulness runs the clean rows with every edge outside the circuit cut (its writer's value
taken from the corrupted run, or the writer's mean over the rows) in one spliced forward.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .. import checks, metrics
from ..backends.base import Edit, Run, Tokens
from ..backends.splice import Splice
from ..errors import InterpError
from ..results.circuit import Circuit, CircuitResult, EdgeScores, FaithfulnessResult, bootstrap
from ..sites import Site
from .ablation import Case
from .batching import by_length, paired_tokens
from .graph import Graph, graph_of
from .runner import Runner

Method = Literal["eap", "eap-ig"]
METHODS: tuple[Method, ...] = ("eap", "eap-ig")
ABLATIONS = ("patch", "mean")
ROWS = 32  # rows per gradient pass at most


@dataclass(frozen=True)
class EdgeAttribution:
    """What edge scores are asked (the probe's argument and memo key)."""

    cases: tuple[Case, ...]
    metric: metrics.Metric = "logit_diff"
    method: Method = "eap"
    steps: int = 5

    def __post_init__(self) -> None:
        checks.choice("method", self.method, METHODS)
        checks.required_int("steps", self.steps, minimum=1)
        metrics.check(self.metric, self.cases[0].foil if self.cases else None)


@dataclass(frozen=True)
class Faithfulness:
    """A circuit's faithfulness on ``cases``; ``sizes``: the top-n circuits of ``scores`` for
    a curve; ``control`` random circuits of the same size, drawn with ``seed``."""

    cases: tuple[Case, ...]
    edges: tuple[str, ...]
    metric: metrics.Metric = "logit_diff"
    ablation: str = "patch"
    control: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks.choice("ablation", self.ablation, ABLATIONS)
        checks.required_int("control", self.control, minimum=0)
        checks.required_int("seed", self.seed)
        metrics.check(self.metric, self.cases[0].foil if self.cases else None)


@dataclass(frozen=True)
class CircuitSearch:
    """A circuit found on ``cases`` (the ``circuit`` marker's and ``find_circuit``'s spec):
    edge scores by ``method``, the top ``top_n`` edges, and (``faithful``) their
    faithfulness with ``control`` random circuits of the same size."""

    cases: tuple[Case, ...]
    metric: metrics.Metric = "logit_diff"
    method: Method = "eap"
    steps: int = 5
    top_n: int = 100
    faithful: bool = True
    ablation: str = "patch"
    control: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        checks.required_int("top_n", self.top_n, minimum=1)
        self.attribution()
        self.run_alone(())

    def attribution(self) -> EdgeAttribution:
        return EdgeAttribution(self.cases, self.metric, self.method, self.steps)

    def run_alone(self, edges: tuple[str, ...]) -> Faithfulness:
        return Faithfulness(self.cases, edges, self.metric, self.ablation, self.control,
                            self.seed)


def find_circuit(model: Runner, spec: CircuitSearch) -> CircuitResult:
    """``spec``'s circuit: its edge scores, top edges and (if asked) faithfulness."""
    scores = edge_scores(model, spec.attribution())
    found = None
    if spec.faithful:
        found = faithfulness(model, spec.run_alone(scores.top(spec.top_n).edges))
    return CircuitResult(scores, spec.top_n, tuple(c.prompt for c in spec.cases), found)


@dataclass
class _Group:
    """Rows of one token length: their tokens and metric functions."""

    rows: list[int]
    clean: Tokens
    corrupted: Tokens
    measures: list[metrics.MetricFn]


def _groups(model: Runner, cases: Sequence[Case], metric: metrics.Metric) -> list[_Group]:
    if not cases:
        raise InterpError("a circuit needs at least one prompt")
    pairs = []
    for case in cases:
        if case.corrupted is None:
            raise InterpError("a circuit needs corrupted= prompts: edges are scored by how "
                              "much the corrupted run's values change the metric")
        pairs.append(paired_tokens(model, case.prompt, case.corrupted))
    out = []
    for group in by_length([clean for clean, _ in pairs]):
        out.append(_Group(group, Tokens.stack([pairs[i][0] for i in group]),
                          Tokens.stack([pairs[i][1] for i in group]),
                          [metrics.build(metric, model.vocab, cases[i].answer, cases[i].foil)
                           for i in group]))
    return out


def _measure(group: _Group, rows: slice, logits: Tensor) -> Tensor:
    """Each row's metric on its last-position logits [rows, V] -> [rows]."""
    return torch.stack([m(logits[i:i + 1])[0]
                        for i, m in enumerate(group.measures[rows])])


def _writers(graph: Graph, acts: Mapping[Site, Tensor]) -> Tensor:
    """The writers' outputs stacked in graph order, [B, P, U, D]."""
    cols = []
    for site in graph.writer_sites_in_order:
        value = acts[site]
        cols.append(value if value.dim() == 4 else value.unsqueeze(2))
    return torch.cat(cols, 2)


def _reader_grads(graph: Graph, zeros: dict[Site, Tensor], grads: Sequence[Tensor]) -> Tensor:
    """The readers' gradients stacked in graph order, [B, P, V, D]."""
    by_site = dict(zip(zeros, grads, strict=True))
    cols = [by_site[site] if by_site[site].dim() == 4 else by_site[site].unsqueeze(2)
            for site in graph.reader_sites_in_order]
    return torch.cat(cols, 2)


def _gradients(model: Runner, graph: Graph, group: _Group, rows: slice, first: int,
               embed: Tensor | None) -> tuple[Tensor, Run]:
    """d metric / d each reader's input on the clean rows at positions ``first:`` (before
    them no writer differs, so no edge score needs them), [B, P - first, V, D], and the run,
    which reads every writer; ``embed`` replaces the embeddings (EAP-IG's interpolation)."""
    info = model.info
    tokens = Tokens(group.clean.ids[rows], group.clean.strs[rows])
    b, p = tokens.batch, tokens.length - first
    positions = tuple(range(first, tokens.length))
    with torch.inference_mode(False), torch.enable_grad():
        zeros: dict[Site, Tensor] = {}
        for site in graph.reader_sites_in_order:
            heads = site.component in ("q_input", "k_input", "v_input")
            shape = (b, p, info.heads_of(site.component), info.d_model) if heads else \
                (b, p, info.d_model)
            zeros[site] = torch.zeros(shape, device=info.device, requires_grad=True)
        edits = [Edit(site, zero, mode="add", positions=positions)
                 for site, zero in zeros.items()]
        if embed is not None:
            edits.insert(0, Edit(Site(0, "resid_pre"), embed))
        run = model.forward(tokens, read=graph.writer_sites_in_order, edits=edits,
                            logits_to_keep=1, grad=True)
        measured = _measure(group, rows, run.logits[:, -1])
        if not measured.requires_grad:
            raise InterpError("the metric has no gradient: edge attribution needs a "
                              "differentiable metric (logit_diff, logprob, prob)")
        grads = torch.autograd.grad(measured.sum(), list(zeros.values()))
    return _reader_grads(graph, zeros, grads).detach(), run


def _first_difference(group: _Group) -> int:
    """The first position where some row's clean and corrupted tokens differ."""
    for p in range(group.clean.length):
        if any(a[p] != c[p] for a, c in zip(group.clean.ids, group.corrupted.ids, strict=True)):
            return p
    return group.clean.length - 1  # identical prompts: every score is zero


def edge_scores(model: Runner, spec: EdgeAttribution) -> EdgeScores:
    """Every edge's score on ``spec.cases`` (see the module docstring)."""
    steps = 1 if spec.method == "eap" else spec.steps
    graph = graph_of(model.info)
    total = torch.zeros(len(graph.writers), len(graph.readers), dtype=torch.float64)
    clean_sum = corrupted_sum = 0.0
    for group in _groups(model, spec.cases, spec.metric):
        first = _first_difference(group)
        per_pass = model.rows_per_pass(group.clean.length, len(group.rows), ROWS)
        for lo in range(0, len(group.rows), per_pass):
            rows = slice(lo, lo + per_pass)
            corrupted = _run(model, graph, group.corrupted, rows)
            clean = _run(model, graph, group.clean, rows) if steps > 1 else None
            grad: Tensor | int = 0
            for k in range(1, steps + 1):
                embed = None
                if clean is not None:
                    e_clean = clean.acts[Site(0, "resid_pre")]
                    e_corr = corrupted.acts[Site(0, "resid_pre")]
                    embed = e_corr + (k / steps) * (e_clean - e_corr)
                more, run = _gradients(model, graph, group, rows, first, embed)
                grad = grad + more
                clean = clean if clean is not None else run  # EAP: the gradient run is clean
            assert clean is not None and isinstance(grad, Tensor)
            clean_sum += float(_measure(group, rows, clean.logits[:, -1].detach()).sum())
            corrupted_sum += float(_measure(group, rows, corrupted.logits[:, -1]).sum())
            delta = (_writers(graph, corrupted.acts) - _writers(graph, clean.acts))[:, first:]
            delta = delta.flatten(0, 1).transpose(0, 1)  # [U, B*P', D]
            g = (grad / steps).flatten(0, 1).transpose(0, 1)  # [V, B*P', D]
            total += (delta.flatten(1) @ g.flatten(1).T).double()
    valid = torch.from_numpy(graph.valid)
    n = len(spec.cases)
    return EdgeScores(
        model=model.info.name, method=spec.method, steps=steps, metric=metrics.label(spec.metric),
        edges=graph.edges, scores=(total[valid] / n).numpy(), rows=n,
        clean=clean_sum / n, corrupted=corrupted_sum / n)


def _run(model: Runner, graph: Graph, tokens: Tokens, rows: slice) -> Run:
    """A memoised run of ``rows`` reading every writer."""
    chunk = Tokens(tokens.ids[rows], tokens.strs[rows])
    return model.run(chunk, read=graph.writer_sites_in_order, logits_to_keep=1)


def faithfulness(model: Runner, spec: Faithfulness) -> FaithfulnessResult:
    """``spec.edges`` run alone on ``spec.cases`` (see the module docstring), with random
    circuits of the same size as controls."""
    graph = graph_of(model.info)
    kept = [graph.locate(spec.edges)]
    rng = np.random.default_rng(spec.seed)
    size = len(set(spec.edges))
    for _ in range(spec.control):
        pick = rng.choice(len(graph.edges), size=size, replace=False)
        kept.append(graph.locate(tuple(graph.edges[i] for i in pick)))
    n = len(spec.cases)
    clean, corrupted = np.zeros(n), np.zeros(n)
    patched = np.zeros((len(kept), n))
    for group in _groups(model, spec.cases, spec.metric):
        per_pass = model.rows_per_pass(group.clean.length, len(group.rows), ROWS)
        for lo in range(0, len(group.rows), per_pass):
            rows = slice(lo, lo + per_pass)
            where = group.rows[rows]
            clean_run = _run(model, graph, group.clean, rows) if spec.ablation == "mean" \
                else model.run(Tokens(group.clean.ids[rows], group.clean.strs[rows]),
                               logits_to_keep=1)
            corrupted_run = _run(model, graph, group.corrupted, rows)
            clean[where] = _measure(group, rows, clean_run.logits[:, -1]).float().numpy()
            corrupted[where] = _measure(group, rows, corrupted_run.logits[:, -1]).float().numpy()
            reference = _writers(graph, corrupted_run.acts)
            if spec.ablation == "mean":
                reference = _writers(graph, clean_run.acts).mean(0, keepdim=True).expand_as(
                    reference)
            tokens = Tokens(group.clean.ids[rows], group.clean.strs[rows])
            for c, edges in enumerate(kept):
                splice = Splice(graph.splice_writers, reference, graph.cuts(edges))
                run = model.forward(tokens, edits=[splice], logits_to_keep=1)
                patched[c, where] = _measure(group, rows, run.logits[:, -1]).float().numpy()
    low, high = bootstrap(clean, corrupted, patched[0], seed=spec.seed)
    controls = tuple(float((p.mean() - corrupted.mean()) / (clean.mean() - corrupted.mean()))
                     for p in patched[1:])
    return FaithfulnessResult(
        model=model.info.name, circuit=Circuit(spec.edges), metric=metrics.label(
            spec.metric), ablation=spec.ablation, clean=clean, corrupted=corrupted,
        patched=patched[0], low=low, high=high, controls=controls,
        control_patched=patched[1:])
