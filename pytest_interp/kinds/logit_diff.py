"""kinds layer: ``@pytest.mark.logit_diff``: the model's own answer-vs-foil preference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from .. import checks
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..results import LogitDiffResult

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class LogitDiffExpectation(Expectation[LogitDiffResult]):
    """logit(answer) - logit(foil) at the last position lies within [min, max]."""

    prompt: str
    _: KW_ONLY
    answer: str
    foil: str
    min: float | None = None
    max: float | None = None

    row_fields = ("prompt", "answer", "foil")
    label_fields = ("answer", "foil")

    def __post_init__(self) -> None:
        for name in ("prompt", "answer", "foil"):
            checks.text(name, getattr(self, name))
        checks.bounds("min", self.min, "max", self.max)
        if self.min is None and self.max is None:
            raise InterpError("no check given: pass min= and/or max=")

    def validate(self, model: InterpModel) -> None:
        model.tokens(self.prompt)
        model.vocab.id(self.answer)
        model.vocab.id(self.foil)

    def run(self, model: InterpModel) -> LogitDiffResult:
        from ..probes.logit_diff import logit_diff

        return logit_diff(model, self.prompt, self.answer, self.foil)

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[LogitDiffExpectation]) -> list[LogitDiffResult]:
        from ..probes.logit_diff import logit_diffs

        return logit_diffs(model, [(e.prompt, e.answer, e.foil) for e in expectations])

    def value_name(self) -> str:
        return "logit diff"

    def value(self, result: LogitDiffResult) -> float:
        return result.value

    def judge(self, result: LogitDiffResult) -> str | None:
        value = result.value
        problems = checks.outside(value, self.min, self.max)
        if not problems:
            return None
        tops = ", ".join(f"{t!r} {p:.2f}" for t, p in result.top)
        return (f"logit_diff: {self.answer!r} - {self.foil!r} at the last position of "
                f"{self.prompt!r} is {value:.3f}, {' and '.join(problems)}\n"
                f"  next-token top-5: {tops}")


KIND = ExpectationKind(
    name="logit_diff", expectation=LogitDiffExpectation, result=LogitDiffResult,
    help="assert logit(answer) - logit(foil) at the last position lies within [min, max].",
    example=(("The cat sat on the",), {"answer": " mat", "foil": " rug", "min": -100}),
)
