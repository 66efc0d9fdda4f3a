"""results layer: circuits: edge scores (EAP, EAP-IG), a circuit (the top edges), its
faithfulness over rows, and the drift of a circuit between two models."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

HEAD_INPUT_ENDS = (".q", ".k", ".v")


def node_of(name: str) -> str:
    """The node an edge end belongs to: ``L9H6.q`` -> ``L9H6``; other names are their own."""
    return name.rsplit(".", 1)[0] if name.endswith(HEAD_INPUT_ENDS) else name


def layer_of(node: str) -> int:
    """Where a node sits, top to bottom: the embeddings (-1), its block, the logits."""
    if node == "logits":
        return 10**6
    found = re.match(r"L(\d+)", node)
    return int(found.group(1)) if found else -1


@dataclass(frozen=True)
class Circuit:
    """A set of edges (``writer->reader``) with their scores, strongest first."""

    edges: tuple[str, ...]
    scores: tuple[float, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every node an edge of the circuit touches, sorted."""
        ends = {node_of(end) for edge in self.edges for end in edge.split("->")}
        return tuple(sorted(ends))

    def __len__(self) -> int:
        return len(self.edges)


@dataclass(frozen=True, eq=False)
class EdgeScores:
    """One score per edge of the model's graph, the mean over rows of the metric's change
    when that edge alone carries the corrupted run's value, to first order (EAP) or along the
    path from corrupted to clean inputs (EAP-IG). ``edges`` in graph order."""

    model: str
    method: str
    steps: int
    metric: str
    edges: tuple[str, ...]
    scores: np.ndarray  # [E]
    rows: int
    clean: float  # the mean metric on clean rows
    corrupted: float  # and on corrupted rows

    def order(self) -> np.ndarray:
        """Edge indices by |score|, largest first (ties in graph order)."""
        return np.argsort(-np.abs(self.scores), kind="stable")

    def top(self, n: int) -> Circuit:
        """The ``n`` edges of largest |score|."""
        keep = self.order()[:n]
        return Circuit(tuple(self.edges[i] for i in keep),
                       tuple(float(self.scores[i]) for i in keep))

    def score(self, edge: str) -> float:
        return float(self.scores[self.edges.index(edge)])

    def rank(self, edge: str) -> int:
        """1 for the edge of largest |score|."""
        where = self.edges.index(edge)
        return int(np.flatnonzero(self.order() == where)[0]) + 1


@dataclass(frozen=True, eq=False)
class FaithfulnessResult:
    """A circuit run alone (every other edge cut, its writer's value taken from the corrupted
    run or its mean), per row: ``value`` is the share of the clean-vs-corrupted metric gap it
    recovers, pooled over rows ((mean circuit - mean corrupted) / (mean clean - mean
    corrupted)), with a bootstrap interval over rows. ``controls`` are random circuits of the
    same size; ``curve`` is (edges, faithfulness) for the top-n circuits of several n."""

    model: str
    circuit: Circuit
    metric: str
    ablation: str
    clean: np.ndarray  # [rows]
    corrupted: np.ndarray
    patched: np.ndarray
    low: float
    high: float
    controls: tuple[float, ...] = ()
    control_patched: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # [C, rows]
    curve: tuple[tuple[int, float], ...] = ()

    @property
    def value(self) -> float:
        return recovered(self.clean, self.corrupted, self.patched)

    @property
    def per_row(self) -> np.ndarray:
        """Each row's recovered share (noisy where a row's gap is small)."""
        gap = self.clean - self.corrupted
        return np.where(gap != 0, (self.patched - self.corrupted) / np.where(gap == 0, 1, gap),
                        np.nan)

    def edges_for(self, share: float) -> int | None:
        """The fewest edges on the curve whose circuit recovers ``share`` (None: none does)."""
        return next((n for n, f in self.curve if f >= share), None)


def recovered(clean: np.ndarray, corrupted: np.ndarray, patched: np.ndarray) -> float:
    """The pooled share of the gap recovered: (patched - corrupted) / (clean - corrupted)."""
    gap = float(np.mean(clean) - np.mean(corrupted))
    return float(np.mean(patched) - np.mean(corrupted)) / gap if gap else float("nan")


def bootstrap(clean: np.ndarray, corrupted: np.ndarray, patched: np.ndarray, *,
              confidence: float = 0.95, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A percentile bootstrap interval over rows of ``recovered``."""
    rows = len(clean)
    if rows < 2:
        value = recovered(clean, corrupted, patched)
        return value, value
    pick = np.random.default_rng(seed).integers(0, rows, size=(n, rows))
    gap = clean[pick].mean(1) - corrupted[pick].mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = (patched[pick].mean(1) - corrupted[pick].mean(1)) / gap
    shares = shares[np.isfinite(shares)]
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(shares, tail)), float(np.percentile(shares, 100 - tail))


@dataclass(frozen=True, eq=False)
class CircuitResult:
    """A circuit found on rows: every edge's ``scores``, the top ``top_n`` edges as
    ``circuit`` and, when asked, its ``faithfulness`` over the rows. A dataset marker's row
    also names its ``row``: ``value`` is then that row's recovered share."""

    scores: EdgeScores
    top_n: int
    prompts: tuple[str, ...]
    faithfulness: FaithfulnessResult | None = None
    row: int | None = None
    drift: CircuitDrift | None = None  # against the baseline model's circuit, when compared

    @property
    def model(self) -> str:
        return self.scores.model

    @property
    def circuit(self) -> Circuit:
        return self.scores.top(self.top_n)

    def top(self, n: int) -> Circuit:
        return self.scores.top(n)

    @property
    def value(self) -> float:
        """The recovered share: this row's, or pooled over the rows (NaN: not measured)."""
        f = self.faithfulness
        if f is None:
            return float("nan")
        return float(f.per_row[self.row]) if self.row is not None else f.value

    @property
    def control_values(self) -> np.ndarray:
        """The random circuits' recovered shares: this row's, or pooled."""
        f = self.faithfulness
        if f is None or not len(f.controls):
            return np.zeros(0)
        if self.row is None:
            return np.asarray(f.controls)
        gap = f.clean[self.row] - f.corrupted[self.row]
        return (f.control_patched[:, self.row] - f.corrupted[self.row]) / (gap or np.nan)


@dataclass(frozen=True)
class CircuitDrift:
    """How the top-n circuit on ``model`` differs from the one on ``baseline``."""

    model: str
    baseline: str
    n: int
    jaccard: float  # |A & B| / |A | B| of the top-n edge sets
    rank_correlation: float  # Spearman's rho of all edge scores
    entered: tuple[str, ...]  # nodes in this circuit, not the baseline's
    left: tuple[str, ...]  # nodes in the baseline's circuit, not this one
    baseline_faithfulness: float | None = None  # the baseline's circuit run on this model
    baseline_edges: tuple[str, ...] = ()


def jaccard(a: Circuit, b: Circuit) -> float:
    union = set(a.edges) | set(b.edges)
    return len(set(a.edges) & set(b.edges)) / len(union) if union else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def drift(result: CircuitResult, baseline: CircuitResult,
          baseline_faithfulness: float | None = None) -> CircuitDrift:
    """How ``result``'s top-n circuit differs from ``baseline``'s."""
    new, old = result.circuit, baseline.circuit
    same = result.scores.edges == baseline.scores.edges
    rho = spearman(result.scores.scores, baseline.scores.scores) if same else float("nan")
    return CircuitDrift(
        model=result.model, baseline=baseline.model, n=result.top_n,
        jaccard=jaccard(new, old), rank_correlation=rho,
        entered=tuple(sorted(set(new.nodes) - set(old.nodes))),
        left=tuple(sorted(set(old.nodes) - set(new.nodes))),
        baseline_faithfulness=baseline_faithfulness, baseline_edges=old.edges)
