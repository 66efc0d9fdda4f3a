"""model layer: the circuit probes of the ``interp_model`` facade: edge scores (EAP, EAP-IG)
and a circuit's faithfulness, over one prompt or a dataset's rows. Memoised per spec."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from . import checks
from .datasets import load as load_rows
from .errors import InterpError

if TYPE_CHECKING:
    from .probes.ablation import Case
    from .probes.runner import Runner
    from .results.circuit import Circuit, CircuitResult, EdgeScores, FaithfulnessResult

    class Facade(Runner, Protocol):
        """What the mixin needs of ``InterpModel`` (without importing it)."""

        root: Path | None

        def remember(self, key: Hashable | None, compute: Callable[[Any], Any]) -> Any: ...

Prompts = str | Sequence[str] | Sequence[dict[str, Any]]


class CircuitProbes:
    """``interp_model.circuit`` and ``interp_model.faithfulness`` (mixed into
    ``InterpModel``)."""

    @property
    def _model(self) -> Facade:
        return cast("Facade", self)

    def cases(self, prompts: Prompts, *, corrupted: str | Sequence[str] | None = None,
              answer: str | None = None, foil: str | None = None) -> tuple[Case, ...]:
        """Rows as cases: a prompt, a list of prompts (with as many ``corrupted``), or a
        dataset (``"ioi:32"``, a file, a list of dicts) whose rows carry ``corrupted``,
        ``answer`` and ``foil``; arguments given here fill what rows leave out."""
        from .probes.ablation import Case

        if isinstance(prompts, str) and corrupted is not None:
            prompts, corrupted = [prompts], [corrupted] if isinstance(corrupted, str) \
                else corrupted
        if isinstance(corrupted, str):
            raise InterpError("several prompts take as many corrupted prompts: pass a list")
        root = self._model.root or Path.cwd()
        rows = load_rows(prompts, root, ("prompt",))
        if corrupted is not None:
            if len(corrupted) != len(rows):
                raise InterpError(f"{len(rows)} prompts but {len(corrupted)} corrupted prompts: "
                                  "pass one corrupted prompt per prompt")
            rows = [{**row, "corrupted": c} for row, c in zip(rows, corrupted, strict=True)]
        out = []
        for i, row in enumerate(rows):
            prompt = row.get("prompt", row.get("clean"))
            if prompt is None or row.get("corrupted") is None:
                raise InterpError(f"row {i} has no {'prompt' if prompt is None else 'corrupted'}"
                                  ": a circuit compares each prompt with a corrupted one")
            out.append(Case(prompt, row.get("answer", answer), row.get("foil", foil),
                            row["corrupted"]))
        return tuple(out)

    def circuit(self, prompts: Prompts, *, corrupted: str | Sequence[str] | None = None,
                answer: str | None = None, foil: str | None = None,
                metric: str = "logit_diff", method: str = "eap", steps: int = 5) -> EdgeScores:
        """Every edge's score (``method="eap"`` or ``"eap-ig"`` with ``steps``) on the rows:
        ``.top(n)`` is the circuit of the n strongest edges (``probes.circuit``). Memoised."""
        from .probes.circuit import EdgeAttribution, edge_scores

        spec = checks.build(EdgeAttribution, "circuit", {
            "cases": self.cases(prompts, corrupted=corrupted, answer=answer, foil=foil),
            "metric": metric, "method": method, "steps": steps})
        return cast("EdgeScores", self._model.remember(spec, lambda m: edge_scores(m, spec)))

    def faithfulness(self, circuit: Circuit | Sequence[str], prompts: Prompts, *,
                     corrupted: str | Sequence[str] | None = None, answer: str | None = None,
                     foil: str | None = None, **options: Any) -> FaithfulnessResult:
        """The circuit run alone on the rows (every other edge cut: its writer's value from
        the corrupted run, ``ablation="patch"``, or its mean over the rows, ``"mean"``): the
        share of the clean-vs-corrupted gap it recovers, with an interval over rows, and
        ``control=N`` random circuits of its size (``probes.circuit.Faithfulness``). Memoised."""
        from .probes.circuit import Faithfulness, faithfulness

        edges = tuple(circuit.edges if hasattr(circuit, "edges") else circuit)
        spec = checks.build(Faithfulness, "faithfulness", {
            "cases": self.cases(prompts, corrupted=corrupted, answer=answer, foil=foil),
            "edges": edges, **options})
        return cast("FaithfulnessResult",
                    self._model.remember(spec, lambda m: faithfulness(m, spec)))

    def faithfulness_curve(self, scores: EdgeScores, prompts: Prompts,
                           sizes: Sequence[int], **options: Any) -> tuple[tuple[int, float], ...]:
        """(n, faithfulness of the top-n circuit) for each n of ``sizes``."""
        return tuple((n, self.faithfulness(scores.top(n), prompts, **options).value)
                     for n in sizes)

    def find_circuit(self, prompts: Prompts, *, corrupted: str | Sequence[str] | None = None,
                     answer: str | None = None, foil: str | None = None,
                     **options: Any) -> CircuitResult:
        """The top ``top_n`` edges of ``circuit(...)`` as one result, with their faithfulness
        (``faithful=True``) and ``control=N`` random circuits (``probes.circuit.
        CircuitSearch``): what the ``circuit`` marker measures, and what a snapshot of a
        circuit stores. Memoised."""
        from .probes.circuit import CircuitSearch, find_circuit

        spec = checks.build(CircuitSearch, "find_circuit", {
            "cases": self.cases(prompts, corrupted=corrupted, answer=answer, foil=foil),
            **options})
        return cast("CircuitResult", self._model.remember(spec, lambda m: find_circuit(m, spec)))
