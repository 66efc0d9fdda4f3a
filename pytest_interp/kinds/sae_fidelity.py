"""kinds layer: ``@pytest.mark.sae_fidelity``: a sparse dictionary still stands in for its site:
the loss with its reconstruction spliced in, its FVU and its L0."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from .. import checks
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..results.features import FidelityResult

if TYPE_CHECKING:
    from ..model import InterpModel
    from ..probes.features import Fidelity


@dataclass(frozen=True)
class SaeFidelityExpectation(Expectation[FidelityResult]):
    """With ``sae``'s reconstruction spliced in for its site (past the first ``skip``
    positions), the next-token loss of ``text`` rises by at most ``max_delta_ce`` nats; the
    reconstruction leaves at most ``max_fvu`` of the variance unexplained; between ``l0[0]``
    and ``l0[1]`` latents are active per position. Over a dataset the mean delta CE is held
    to ``max_delta_ce`` with its interval, and the pooled FVU and mean L0 of all rows to the
    others."""

    text: str
    _: KW_ONLY
    sae: str
    max_delta_ce: float | None = None
    max_fvu: float | None = None
    l0: tuple[float, float] | None = None
    skip: int = 1

    row_fields = ("text",)
    bound_fields = ("", "max_delta_ce")
    label_fields = ("max_fvu", "l0")

    def __post_init__(self) -> None:
        checks.text("text", self.text)
        checks.text("sae", self.sae)
        for name in ("max_delta_ce", "max_fvu"):
            checks.number(name, getattr(self, name))
        if self.l0 is not None:
            if not (isinstance(self.l0, tuple | list) and len(self.l0) == 2
                    and all(isinstance(v, int | float) and not isinstance(v, bool)
                            for v in self.l0) and 0 <= self.l0[0] <= self.l0[1]):
                raise InterpError(f"l0 must be a pair (low, high) with 0 <= low <= high, got "
                                  f"{self.l0!r}")
            object.__setattr__(self, "l0", (float(self.l0[0]), float(self.l0[1])))
        if not checks.is_int(self.skip) or self.skip < 0:
            raise InterpError(f"skip must be an int >= 0, got {self.skip!r}")
        if self.max_delta_ce is None and self.max_fvu is None and self.l0 is None:
            raise InterpError("no check given: pass max_delta_ce=, max_fvu= and/or l0=(low, "
                              "high)")

    def validate(self, model: InterpModel) -> None:
        model.dictionary(self.sae)

    def run(self, model: InterpModel) -> FidelityResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[SaeFidelityExpectation]) -> list[FidelityResult]:
        """One batch per dictionary and skip: three forward passes per token length."""
        from ..probes.features import Fidelity

        out: dict[int, FidelityResult] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for i, e in enumerate(expectations):
            groups.setdefault((e.sae, e.skip), []).append(i)
        for (sae, skip), members in groups.items():
            texts = tuple(dict.fromkeys(expectations[i].text for i in members))
            spec = Fidelity(texts, sae, skip)
            results: list[FidelityResult] = model.remember(spec, _recipe(spec))
            found = dict(zip(texts, results, strict=True))
            for i in members:
                out[i] = found[expectations[i].text]
        return [out[i] for i in range(len(expectations))]

    def value_name(self) -> str:
        return "delta CE"

    def value(self, result: FidelityResult) -> float:
        return result.delta_ce

    def judge(self, result: FidelityResult) -> str | None:
        problems = self._problems(result)
        if not problems:
            return None
        return (f"sae_fidelity: {result.sae} at {result.site} on {result.texts[0]!r}: "
                f"{'; '.join(problems)}\n{_table(result)}")

    def judge_rows(self, results: Sequence[FidelityResult]) -> str | None:
        pooled = FidelityResult.pooled(results)
        problems = self._problems(pooled, delta=False)
        if not problems:
            return None
        return (f"{pooled.sae} at {pooled.site} over {len(results)} texts: {'; '.join(problems)}"
                f"\n{_table(pooled)}")

    def _problems(self, result: FidelityResult, delta: bool = True) -> list[str]:
        problems = []
        if delta and self.max_delta_ce is not None and result.delta_ce > self.max_delta_ce:
            problems.append(f"the loss rises by {result.delta_ce:.4f} nats with the "
                            f"reconstruction spliced in, above max_delta_ce="
                            f"{self.max_delta_ce:g}")
        if self.max_fvu is not None and result.fvu > self.max_fvu:
            problems.append(f"the FVU is {result.fvu:.4f}, above max_fvu={self.max_fvu:g}")
        if self.l0 is not None and not self.l0[0] <= result.l0 <= self.l0[1]:
            problems.append(f"the L0 is {result.l0:.1f}, outside l0=({self.l0[0]:g}, "
                            f"{self.l0[1]:g})")
        return problems


def _recipe(spec: Fidelity) -> Callable[[InterpModel], list[FidelityResult]]:
    """How a variant of the model computes a batch's fidelity."""
    return lambda m: m.fidelity_of(spec)


def _table(result: FidelityResult) -> str:
    return (f"  FVU {result.fvu:.4f}, L0 {result.l0:.1f}; loss clean {result.ce_clean:.4f}, "
            f"spliced {result.ce_spliced:.4f} (delta CE {result.delta_ce:+.4f}, KL "
            f"{result.kl:.4f}), with the error term {result.ce_with_error:.4f} "
            f"({result.positions} predictions)")


def fidelity_figure(result: FidelityResult) -> str:
    """The fidelity numbers as a line."""
    return f"<h4>sae fidelity</h4><pre>{_table(result).strip()}</pre>"


KIND = ExpectationKind(
    name="sae_fidelity", expectation=SaeFidelityExpectation, result=FidelityResult,
    help="assert a sparse dictionary stands in for its site: the loss with its reconstruction "
         "spliced in (max_delta_ce=, nats), its FVU (max_fvu=), its L0 (l0=(low, high)).",
    figure=fidelity_figure,
)
