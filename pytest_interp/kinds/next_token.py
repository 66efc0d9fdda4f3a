"""kinds layer: ``@pytest.mark.next_token``: the model's next token (the GPT-2 tutorial's first
check)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from .. import checks
from ..expectation import Expectation, ExpectationKind
from ..report.draw import esc

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class NextTokenResult:
    """``expect``'s rank (0 = top-1) and probability as the next token, with the top-5."""

    model: str
    prompt: str
    expect: str
    rank: int
    prob: float
    top: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class NextTokenExpectation(Expectation[NextTokenResult]):
    """``expect`` is among the top ``top_k`` next tokens of ``prompt`` (and has at least
    ``min_prob``)."""

    prompt: str
    expect: str
    _: KW_ONLY
    top_k: int = 1
    min_prob: float | None = None

    row_fields = ("prompt", "expect")
    label_fields = ("expect", "top_k")
    bound_fields = ("min_prob", "")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("expect", self.expect)
        checks.required_int("top_k", self.top_k, minimum=1)
        checks.probability("min_prob", self.min_prob)

    def validate(self, model: InterpModel) -> None:
        model.tokens(self.prompt)
        model.vocab.id(self.expect)

    def run(self, model: InterpModel) -> NextTokenResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[NextTokenExpectation]) -> list[NextTokenResult]:
        import torch

        from ..probes.batching import last_logits

        out = []
        logits = last_logits(model, [e.prompt for e in expectations])
        for e, row in zip(expectations, logits, strict=True):
            probs = torch.softmax(row.float(), -1)
            i = model.vocab.id(e.expect)
            top = probs.topk(5)
            out.append(NextTokenResult(
                model=model.info.name, prompt=e.prompt, expect=e.expect,
                rank=int((probs > probs[i]).sum()), prob=float(probs[i]),
                top=tuple((model.vocab.decode_one(int(t)), float(p))
                          for p, t in zip(top.values, top.indices, strict=True))))
        return out

    def value_name(self) -> str | None:
        return "probability" if self.min_prob is not None else None

    def value(self, result: NextTokenResult) -> float:
        return result.prob

    def judge(self, result: NextTokenResult) -> str | None:
        problems = []
        if result.rank >= self.top_k:
            problems.append(f"has rank {result.rank}, expected top_k={self.top_k}")
        if self.min_prob is not None and result.prob < self.min_prob:
            problems.append(f"has probability {result.prob:.4f}, expected "
                            f"min_prob={self.min_prob}")
        if not problems:
            return None
        tops = ", ".join(f"{t!r} {p:.3f}" for t, p in result.top)
        return (f"next_token: {self.expect!r} after {self.prompt!r} {' and '.join(problems)}\n"
                f"  next-token top-5: {tops}")


def next_token_figure(result: NextTokenResult) -> str:
    """The top-5 next tokens, the expected one in bold."""
    cells = "".join(
        f"<tr><td>{'<b>' if t == result.expect else ''}{esc(repr(t))}</td><td>{p:.3f}</td></tr>"
        for t, p in result.top)
    return (f"<h4>next token after {esc(repr(result.prompt))}: {esc(repr(result.expect))} has "
            f"rank {result.rank}, p={result.prob:.3f}</h4><table class='ps'>{cells}</table>")


KIND = ExpectationKind(
    name="next_token", expectation=NextTokenExpectation, result=NextTokenResult,
    help="assert the next token: expect is in the top_k next tokens of prompt (and has at "
         "least min_prob).",
    figure=next_token_figure,
    example=(("The cat sat on the", " mat"), {"top_k": 50000}),
)

