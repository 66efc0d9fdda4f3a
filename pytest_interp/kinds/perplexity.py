"""kinds layer: ``@pytest.mark.perplexity``: how well the model predicts a text (the GPT-2
tutorial's loss)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING

from .. import checks
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..report.draw import esc

if TYPE_CHECKING:
    from ..model import InterpModel

WORST = 5  # tokens a failure lists


@dataclass(frozen=True)
class PerplexityResult:
    """Each token's loss (-log P given the tokens before it; the first token has none) and
    the perplexity, exp(mean loss)."""

    model: str
    text: str
    tokens: tuple[str, ...]
    losses: tuple[float, ...]  # len(tokens) - 1: the loss of tokens[1:]

    @property
    def perplexity(self) -> float:
        return math.exp(sum(self.losses) / len(self.losses))

    def worst(self, n: int = WORST) -> list[tuple[int, str, float]]:
        """The ``n`` tokens with the highest loss: (position, token, loss)."""
        ranked = sorted(range(len(self.losses)), key=lambda i: -self.losses[i])[:n]
        return [(i + 1, self.tokens[i + 1], self.losses[i]) for i in ranked]


@dataclass(frozen=True)
class PerplexityExpectation(Expectation[PerplexityResult]):
    """The perplexity of ``text`` lies within [min, max]."""

    text: str
    _: KW_ONLY
    min: float | None = None
    max: float | None = None

    row_fields = ("text",)

    def __post_init__(self) -> None:
        checks.text("text", self.text)
        checks.bounds("min", self.min, "max", self.max)
        if self.min is None and self.max is None:
            raise InterpError("no check given: pass min= and/or max=")

    def validate(self, model: InterpModel) -> None:
        if model.tokens(self.text).length < 2:
            raise InterpError(f"text {self.text!r} is one token: perplexity needs at least two")

    def run(self, model: InterpModel) -> PerplexityResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[PerplexityExpectation]) -> list[PerplexityResult]:
        """Batched by token length, 16 texts per forward (full logits are [B, P, V])."""
        import torch

        from ..backends.base import Tokens
        from ..probes.batching import by_length

        tokens = [model.tokens(e.text) for e in expectations]
        losses: list[tuple[float, ...]] = [()] * len(tokens)
        with torch.inference_mode():
            for group in by_length(tokens):
                for lo in range(0, len(group), 16):
                    chunk = group[lo:lo + 16]
                    batch = Tokens.stack([tokens[i] for i in chunk])
                    logp = torch.log_softmax(model.forward(batch).logits.float(), -1)
                    ids = batch.tensor(logp.device)
                    nll = -logp[:, :-1].gather(-1, ids[:, 1:, None])[..., 0]
                    for row, i in enumerate(chunk):
                        losses[i] = tuple(float(x) for x in nll[row])
        return [PerplexityResult(model.info.name, e.text, t.strs[0], loss)
                for e, t, loss in zip(expectations, tokens, losses, strict=True)]

    def value_name(self) -> str:
        return "perplexity"

    def value(self, result: PerplexityResult) -> float:
        return result.perplexity

    def judge(self, result: PerplexityResult) -> str | None:
        ppl = result.perplexity
        problems = checks.outside(ppl, self.min, self.max)
        if not problems:
            return None
        worst = "\n".join(f"    {pos:>4}  {token!r:<16} {loss:.3f}"
                          for pos, token, loss in result.worst())
        return (f"perplexity: {self.text!r} has perplexity {ppl:.3f}, {' and '.join(problems)}"
                f"\n  the worst tokens (position, token, loss in nats):\n{worst}")


def perplexity_figure(result: PerplexityResult) -> str:
    """The text, each token shaded by its loss."""
    cells = "".join(
        f"<span title='loss {loss:.2f}' style='background:rgba(208,69,58,"
        f"{min(1.0, loss / 10):.2f})'>{esc(t)}</span>"
        for t, loss in zip(result.tokens[1:], result.losses, strict=True))
    return (f"<h4>perplexity {result.perplexity:.2f} (darker = a higher loss)</h4>"
            f"<pre>{esc(result.tokens[0])}{cells}</pre>")


KIND = ExpectationKind(
    name="perplexity", expectation=PerplexityExpectation, result=PerplexityResult,
    help="assert how well the model predicts text: its perplexity lies within [min, max].",
    figure=perplexity_figure,
    example=(("The cat sat on the mat.",), {"max": 1e9}),
)
