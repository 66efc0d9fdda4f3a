"""kinds layer: ``@pytest.mark.generation``: what the model writes, greedily (the GPT-2 tutorial's
check)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import checks
from ..codec import (
    Change,
    SnapshotCodec,
    Tolerances,
    is_steps,
    is_str,
    schema,
    steps_of,
    text_change,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..report.draw import esc
from ..results import GenerationResult

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class GenerationExpectation(Expectation[GenerationResult]):
    """The greedy continuation of ``prompt`` contains one of ``contains``, none of
    ``not_contains``, and matches ``regex`` (``re.search``)."""

    prompt: str
    _: KW_ONLY
    contains: str | tuple[str, ...] | None = None
    not_contains: str | tuple[str, ...] | None = None
    regex: str | None = None
    max_new_tokens: int = 20

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        for name in ("contains", "not_contains"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, checks.texts(name, getattr(self, name)))
        if self.regex is not None:
            checks.text("regex", self.regex)
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise InterpError(f"regex {self.regex!r} does not compile ({exc})") from None
        checks.required_int("max_new_tokens", self.max_new_tokens, minimum=1)
        if self.contains is None and self.not_contains is None and self.regex is None:
            raise InterpError("no check given: pass contains=, not_contains= or regex=")

    def run(self, model: InterpModel) -> GenerationResult:
        return model.generation(self.prompt, max_new_tokens=self.max_new_tokens)

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[GenerationExpectation]) -> list[GenerationResult]:
        """Batched greedy decoding per token length and max_new_tokens."""
        from ..probes.generation import generations

        out: list[GenerationResult | None] = [None] * len(expectations)
        for n in {e.max_new_tokens for e in expectations}:
            picked = [i for i, e in enumerate(expectations) if e.max_new_tokens == n]
            for i, r in zip(picked, generations(model, [expectations[i].prompt for i in picked],
                                                max_new_tokens=n), strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def judge(self, result: GenerationResult) -> str | None:
        text, problems = result.text, []
        if self.contains is not None and not any(w in text for w in self.contains):
            problems.append(f"contains none of {', '.join(map(repr, self.contains))}")
        found = [w for w in self.not_contains or () if w in text]
        if found:
            problems.append(f"contains {', '.join(map(repr, found))} (not_contains)")
        if self.regex is not None and re.search(self.regex, text) is None:
            problems.append(f"does not match regex {self.regex!r}")
        if not problems:
            return None
        steps = "  ".join(f"{t!r} {m:.2f}" for t, m in zip(result.tokens, result.margins,
                                                          strict=True))
        return (f"generation: the greedy continuation of {self.prompt!r} is {text!r}, which "
                f"{' and '.join(problems)}\n  tokens with their margins (top-1 minus top-2 "
                f"logit): {steps}")


class GenerationCodec(SnapshotCodec[GenerationResult]):
    """The text and its steps (each token with its margin), on the metadata line."""

    kind = "generation"
    meta_schema = schema(prompt=is_str, text=is_str, steps=is_steps)
    identity = ("prompt",)
    meta_units = MappingProxyType({"steps": "steps"})

    def summarize(self, result: GenerationResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "prompt": result.prompt, "text": result.text,
                "steps": steps_of(result.tokens, result.margins)}
        return meta, []

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        return text_change("generation", old["text"], new["text"], old["steps"], new["steps"],
                           tol.at(old, "steps", "steps"))


def generation_figure(result: GenerationResult) -> str:
    """The continuation, each token shaded by how sure the step was (its margin)."""
    cells = "".join(
        f"<span title='margin {m:.2f}' style='background:rgba(74,123,208,"
        f"{min(1.0, m / 10):.2f})'>{esc(t)}</span>" for t, m in zip(result.tokens,
                                                                    result.margins, strict=True))
    return (f"<h4>greedy continuation of {esc(repr(result.prompt))} (darker = a surer "
            f"step)</h4><pre>{esc(result.prompt)}<b>{cells}</b></pre>")


KIND = ExpectationKind(
    name="generation", expectation=GenerationExpectation, result=GenerationResult,
    help="assert what the model writes: the greedy continuation contains one of contains, "
         "none of not_contains, and matches regex.",
    codec=GenerationCodec(), figure=generation_figure,
    example=(("The cat sat on the",), {"not_contains": "zzz", "max_new_tokens": 3}),
)
