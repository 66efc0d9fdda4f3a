"""kinds layer: ``@pytest.mark.circuit``: the circuit edge attribution finds on clean vs corrupted
prompts is faithful (its top edges alone recover the behaviour), contains the edges or nodes
a test names, and beats random circuits of its size; with a baseline model, how it drifted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, replace
from functools import partial
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks, metrics
from ..codec import (
    EXACT,
    Change,
    SnapshotCodec,
    Tolerances,
    is_int,
    is_number,
    is_str,
    is_strs,
    number_change,
    rounded,
    schema,
)
from ..errors import InterpError
from ..expectation import Drift, Expectation, ExpectationKind
from ..record import derived
from ..report.draw import esc
from ..results import beaten
from ..results.circuit import CircuitResult, drift, layer_of, node_of

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class CircuitExpectation(Expectation[CircuitResult]):
    """Edge attribution (``method="eap"`` or ``"eap-ig"`` with ``steps``) of ``metric`` on
    ``prompt`` vs ``corrupted`` finds a circuit of ``top_n`` edges that recovers at least
    ``min_faithfulness`` of the clean-vs-corrupted gap when run alone (every other edge cut,
    ``ablation="patch"`` or ``"mean"``), holds every edge of ``edges`` and touches every node
    of ``nodes``, and (``control=N``) recovers more than ``percentile``% of N random circuits
    of its size. Over a dataset the circuit is found on all rows at once and the mean
    recovered share is held to ``min_faithfulness`` with its interval. Against
    ``--interp-baseline``, the top-n edges share at least ``min_jaccard`` with the baseline
    model's (the drift numbers are reported either way). Below ``min_effect`` (the
    metric's default) of clean-vs-corrupted difference there is nothing to recover:
    INCONCLUSIVE."""

    prompt: str
    _: KW_ONLY
    corrupted: str
    answer: str | None = None
    foil: str | None = None
    metric: metrics.Metric = "logit_diff"
    method: str = "eap"
    steps: int = 5
    top_n: int = 100
    min_faithfulness: float | None = None
    edges: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    control: int = 0
    percentile: float = 95.0
    ablation: str = "patch"
    seed: int = 0
    min_jaccard: float | None = None
    min_effect: float | None = None

    row_fields = ("prompt", "corrupted", "answer", "foil")
    bound_fields = ("min_faithfulness", "")
    label_fields = ("top_n", "method")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("corrupted", self.corrupted)
        for name in ("edges", "nodes"):
            value = getattr(self, name)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise InterpError(f"{name} must be a list of names (e.g. {name}="
                                  f"{['L9H6->logits'] if name == 'edges' else ['L9H6']}), "
                                  f"got {value!r}")
            object.__setattr__(self, name, tuple(value))
        bad = [e for e in self.edges if e.count("->") != 1]
        if bad:
            raise InterpError(f"edge {bad[0]!r} is not written writer->reader (e.g. "
                              "'L5H1->L9H6.q', 'L9.mlp->logits')")
        checks.number("min_faithfulness", self.min_faithfulness)
        checks.number("min_jaccard", self.min_jaccard)
        checks.number("min_effect", self.min_effect)
        checks.number("percentile", self.percentile)
        if self.percentile is None or not 0 < self.percentile <= 100:
            raise InterpError(f"percentile must be in (0, 100], got {self.percentile!r}")
        self.search()  # method, steps, top_n, ablation, control and metric, checked there
        if self.min_faithfulness is None and not self.edges and not self.nodes \
                and not self.control and self.min_jaccard is None:
            raise InterpError("no claim given: pass min_faithfulness=, edges=[...], "
                              "nodes=[...], control=N and/or min_jaccard=")

    def search(self, cases: tuple[Any, ...] | None = None) -> Any:
        """The probe's spec for these rows (this expectation's row alone by default)."""
        from ..probes.ablation import Case
        from ..probes.circuit import CircuitSearch

        if cases is None:
            cases = (Case(self.prompt, self.answer, self.foil, self.corrupted),)
        return CircuitSearch(cases, self.metric, self.method, self.steps,  # type: ignore[arg-type]
                             self.top_n, self.min_faithfulness is not None or bool(self.control),
                             self.ablation, self.control, self.seed)

    def run(self, model: InterpModel) -> CircuitResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[CircuitExpectation]) -> list[CircuitResult]:
        """One circuit for all rows that share the marker's settings; each row's result
        holds it, with its own recovered share."""
        from ..probes.ablation import Case

        out: dict[int, CircuitResult] = {}
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, e in enumerate(expectations):
            key = (e.metric, e.method, e.steps, e.top_n, e.min_faithfulness is None, e.control,
                   e.ablation, e.seed)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            rows = [expectations[i] for i in members]
            cases = tuple(Case(e.prompt, e.answer, e.foil, e.corrupted) for e in rows)
            spec = rows[0].search(cases)
            found: CircuitResult = model.remember(spec, _recipe(spec))
            for row, i in enumerate(members):
                out[i] = found if len(members) == 1 else \
                    derived(replace(found, row=row), found, partial(replace, row=row))
        return [out[i] for i in range(len(expectations))]

    def value_name(self) -> str:
        return "faithfulness"

    def value(self, result: CircuitResult) -> float:
        return result.value

    def effect(self, result: CircuitResult) -> float | None:
        f = result.faithfulness
        if f is None:
            return None
        row = result.row
        return float(f.clean[row] - f.corrupted[row]) if row is not None else \
            float(np.mean(f.clean) - np.mean(f.corrupted))

    @property
    def effect_floor(self) -> float:
        return metrics.min_effect(self.metric, self.min_effect)

    def effect_text(self, result: CircuitResult, effect: float) -> str:
        return (f"circuit: no behaviour to carry: the {result.scores.metric} on {self.prompt!r} "
                f"differs by {effect:+.3f} between clean and corrupted, below "
                f"min_effect={self.effect_floor:g}: faithfulness would divide by it; pick "
                "prompts whose corruption changes the answer, or lower min_effect=")

    def judge(self, result: CircuitResult) -> str | None:
        none = self.no_effect(result)
        if none is not None:
            return none
        problems = self._membership(result)
        if self.min_faithfulness is not None and result.value < self.min_faithfulness:
            problems.append(f"it recovers {result.value:.1%} of the clean-vs-corrupted gap, "
                            f"below min_faithfulness={self.min_faithfulness:g}")
        problems += self._controls(result.value, result.control_values)
        return _failure(self, result, problems) if problems else None

    def judge_rows(self, results: Sequence[CircuitResult]) -> str | None:
        """Over a dataset: the joint circuit's edges and nodes, and its mean recovered
        share against the random circuits' mean shares."""
        if not results:
            return None
        first = replace(results[0], row=None)
        mean = float(np.mean([r.value for r in results]))
        controls = np.mean([r.control_values for r in results], axis=0) if self.control \
            else np.zeros(0)
        problems = self._membership(first) + self._controls(mean, controls)
        return _failure(self, first, problems) if problems else None

    def _membership(self, result: CircuitResult) -> list[str]:
        circuit, problems = result.circuit, []
        missing = [e for e in self.edges if e not in circuit.edges]
        for edge in missing:
            where = (f"rank {result.scores.rank(edge)}, score {result.scores.score(edge):+.4f}"
                     if edge in result.scores.edges else "not an edge of this model")
            problems.append(f"edge {edge} is not in the top {self.top_n} ({where})")
        for node in (n for n in self.nodes if n not in circuit.nodes):
            problems.append(f"node {node} is not in the top-{self.top_n} circuit")
        return problems

    def _controls(self, value: float, controls: np.ndarray) -> list[str]:
        if not self.control or not len(controls):
            return []
        share = beaten(value, controls)
        if share * 100 >= self.percentile:
            return []
        edge = float(np.percentile(controls, self.percentile))
        return [f"it recovers {value:.1%}, which beats {share:.0%} of {len(controls)} random "
                f"circuits of {self.top_n} edges, expected {self.percentile:g}%: their "
                f"{self.percentile:g}th percentile is {edge:.1%}"]

    def drift(self, model: Any, result: CircuitResult, old: CircuitResult,
              rows: Sequence[Expectation[CircuitResult]]) -> Drift[CircuitResult]:
        """Jaccard of the top-n edges, rank correlation of all scores, nodes entered and
        left, and the baseline's circuit run alone on this model."""
        from ..probes.circuit import faithfulness

        new, old = replace(result, row=None), replace(old, row=None)
        cases = self.search(tuple(_case(r) for r in rows)).run_alone(old.circuit.edges)
        theirs = model.remember(cases, lambda m: faithfulness(m, cases)).value
        found = drift(new, old, theirs)
        line = (f"vs {found.baseline}: Jaccard {found.jaccard:.2f} of the top {found.n}, rank "
                f"correlation {found.rank_correlation:.2f}, the baseline's circuit recovers "
                f"{theirs:.1%}; nodes entered {list(found.entered) or 'none'}, left "
                f"{list(found.left) or 'none'}")
        failure = None
        if self.min_jaccard is not None and found.jaccard < self.min_jaccard:
            failure = (f"circuit: the top-{self.top_n} circuit drifted from {found.baseline}'s: "
                       f"Jaccard {found.jaccard:.2f}, below min_jaccard={self.min_jaccard:g}\n"
                       f"  {line}")
        points = ({"name": "Jaccard vs baseline", "value": found.jaccard,
                   "low": self.min_jaccard, "high": None},
                  {"name": "rank correlation vs baseline", "value": found.rank_correlation,
                   "low": None, "high": None},
                  {"name": "baseline circuit's faithfulness", "value": theirs, "low": None,
                   "high": None})
        return Drift(replace(new, drift=found), points, line, failure)

    def point(self, result: CircuitResult) -> dict[str, Any] | None:
        if result.faithfulness is None:
            return None
        return super().point(result)


def _case(e: Expectation[CircuitResult]) -> Any:
    from ..probes.ablation import Case

    assert isinstance(e, CircuitExpectation)
    return Case(e.prompt, e.answer, e.foil, e.corrupted)


def _recipe(spec: Any) -> Any:
    """How a variant of the model finds the same circuit."""
    from ..probes.circuit import find_circuit

    return lambda m: find_circuit(m, spec)


def _failure(e: CircuitExpectation, result: CircuitResult, problems: list[str]) -> str:
    rows = len(result.prompts)
    on = repr(e.prompt) if rows == 1 else f"{rows} prompts"
    return (f"circuit: the top-{e.top_n} {e.method.upper()} circuit on {on}: "
            f"{'; '.join(problems)}\n{_table(result)}")


def _table(result: CircuitResult, shown: int = 8) -> str:
    circuit, lines = result.circuit, []
    for edge, score in list(zip(circuit.edges, circuit.scores, strict=True))[:shown]:
        lines.append(f"  {edge:<24} {score:+.4f}")
    f = result.faithfulness
    if f is not None:
        lines.append(f"  faithfulness {f.value:.1%} [{f.low:.1%}, {f.high:.1%}] over "
                     f"{len(f.clean)} rows ({f.ablation}); {len(circuit.nodes)} nodes")
    return "\n".join(lines)


class CircuitCodec(SnapshotCodec[CircuitResult]):
    """The top-n edges with their scores as a share of the strongest, and the faithfulness:
    an edge that leaves or enters at the n-th place within the tolerance is a near-tie."""

    kind = "circuit"
    meta_schema = schema(method=is_str, metric=is_str, top_n=is_int, prompts=is_strs)
    optional_meta = schema(faithfulness=is_number)
    row_schema = schema(edge=is_str, score=is_number)
    identity = ("method", "metric", "top_n", "prompts")
    row_keys = ()
    units = MappingProxyType({"score": "top"})
    meta_units = MappingProxyType({"faithfulness": "recovery"})

    def summarize(self, result: CircuitResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        circuit = result.circuit
        strongest = max((abs(s) for s in circuit.scores), default=1.0) or 1.0
        meta: dict[str, Any] = {"model": result.model, "method": result.scores.method,
                                "metric": result.scores.metric, "top_n": result.top_n,
                                "prompts": list(result.prompts)}
        if result.faithfulness is not None:
            meta["faithfulness"] = rounded(result.faithfulness.value)
        rows = [{"edge": e, "score": rounded(s / strongest)}
                for e, s in zip(circuit.edges, circuit.scores, strict=True)]
        return meta, rows

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes: list[Change] = []
        if "faithfulness" in old and "faithfulness" in new:
            size = number_change(old["faithfulness"], new["faithfulness"],
                                 tol.at(old, "faithfulness", "recovery"))
            if size:
                changes.append(Change(size, f"faithfulness {old['faithfulness']:.4f} -> "
                                            f"{new['faithfulness']:.4f}"))
        before = {r["edge"]: r["score"] for r in old_rows}
        after = {r["edge"]: r["score"] for r in new_rows}
        cut_old = min((abs(s) for s in before.values()), default=0.0)
        cut_new = min((abs(s) for s in after.values()), default=0.0)
        unit = tol.at(old_rows[0], "score", "top") if old_rows else tol.at({}, "score", "top")
        for edge, share in before.items():
            if edge in after:
                size = number_change(share, after[edge], unit)
                if size:
                    changes.append(Change(size, f"edge {edge}: score {share:+.3f} -> "
                                                f"{after[edge]:+.3f} of the strongest"))
            else:
                changes.append(_crossed(edge, share, cut_new, unit, "left"))
        for edge, share in after.items():
            if edge not in before:
                changes.append(_crossed(edge, share, cut_old, unit, "entered"))
        inside = len(set(before) & set(after))
        union = len(set(before) | set(after)) or 1
        nodes = ({node_of(x) for e in before for x in e.split("->")},
                 {node_of(x) for e in after for x in e.split("->")})
        changes.append(Change(0.0, f"top-{len(after)} circuit: Jaccard {inside / union:.2f} "
                                   f"with the stored one; nodes entered "
                                   f"{sorted(nodes[1] - nodes[0]) or 'none'}, left "
                                   f"{sorted(nodes[0] - nodes[1]) or 'none'}", noise=True))
        return changes


def _crossed(edge: str, share: float, cutoff: float, tol: float, how: str) -> Change:
    """An edge that crossed the n-th place: a near-tie when its share is within ``tol`` of
    the other circuit's weakest edge."""
    gap = abs(share) - cutoff
    text = f"edge {edge} ({share:+.3f} of the strongest) {how} the top n"
    if gap <= tol:
        return Change(0.0, f"{text}, a near-tie at the cutoff (within {tol:g})", noise=True)
    return Change(EXACT if not tol else gap / tol, text)


def circuit_figure(result: CircuitResult) -> str:
    """The circuit as a graph: layers top to bottom, edge width by |score| (blue raises the
    metric, red lowers it); in a drift, green edges entered and grey dashed ones left."""
    circuit = result.circuit
    drifted = result.drift
    edges = list(zip(circuit.edges, circuit.scores, strict=True))
    gone = [(e, 0.0) for e in (drifted.baseline_edges if drifted else ())
            if e not in circuit.edges]
    ends = {node_of(x) for e, _ in edges + gone for x in e.split("->")}
    layers = sorted({layer_of(n) for n in ends})
    row = {layer: i for i, layer in enumerate(layers)}
    cols: dict[int, list[str]] = {}
    for n in sorted(ends, key=lambda n: (layer_of(n), n.endswith(".mlp"), n)):
        cols.setdefault(layer_of(n), []).append(n)
    width = max(360, 60 * max(len(v) for v in cols.values()) + 40) if cols else 360
    height = 50 * len(layers) + 30
    pos = {n: (30 + (width - 60) * (j + 0.5) / len(names), 25 + 50 * row[layer])
           for layer, names in cols.items() for j, n in enumerate(names)}
    strongest = max((abs(s) for _, s in edges), default=1.0) or 1.0
    lines = []
    for edge, score in edges + gone:
        a, b = (pos[node_of(x)] for x in edge.split("->"))
        entered = drifted is not None and edge not in drifted.baseline_edges
        color = "#999" if (edge, 0.0) in gone else "#2a2" if entered else \
            "#36c" if score >= 0 else "#c33"
        dash = " stroke-dasharray='4 3'" if (edge, 0.0) in gone else ""
        w = 0.6 + 4 * abs(score) / strongest
        lines.append(f"<line x1='{a[0]:.0f}' y1='{a[1]:.0f}' x2='{b[0]:.0f}' y2='{b[1]:.0f}' "
                     f"stroke='{color}' stroke-width='{w:.1f}' opacity='0.7'{dash}>"
                     f"<title>{esc(edge)} {score:+.4f}</title></line>")
    dots = [f"<circle cx='{x:.0f}' cy='{y:.0f}' r='9' fill='#fff' stroke='#333'/>"
            f"<text x='{x:.0f}' y='{y + 3:.0f}' font-size='7' text-anchor='middle'>"
            f"{esc(n)}</text>" for n, (x, y) in pos.items()]
    f = result.faithfulness
    title = f"circuit: top {result.top_n} edges ({result.scores.method.upper()})" + (
        f", faithfulness {f.value:.1%}" if f is not None else "") + (
        f"; vs {drifted.baseline}: Jaccard {drifted.jaccard:.2f}" if drifted else "")
    return (f"<h4>{esc(title)}</h4><svg width='{width}' height='{height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(lines)}{''.join(dots)}</svg>")


KIND = ExpectationKind(
    name="circuit", expectation=CircuitExpectation, result=CircuitResult,
    help="assert the circuit edge attribution finds on prompt vs corrupted: its top_n edges "
         "alone recover min_faithfulness of the gap, hold edges=[...] / nodes=[...], beat "
         "control=N random circuits of their size (method='eap' or 'eap-ig').",
    codec=CircuitCodec(), figure=circuit_figure,
    example=(("When Mary and John went to the store, John gave a drink to",),
             {"corrupted": "When Mary and John went to the store, Anna gave a drink to",
              "answer": " Mary", "foil": " John", "top_n": 20, "min_faithfulness": 0.0}),
)
