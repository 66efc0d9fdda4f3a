"""kinds layer: ``@pytest.mark.patchscope``: what a hidden state says when decoded by a target
prompt."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import checks
from ..codec import (
    Change,
    SnapshotCodec,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_opt_str,
    is_steps,
    is_str,
    number_change,
    rounded,
    schema,
    steps_of,
    text_change,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..report.draw import esc
from ..results import PatchscopeResult, TokenSpec, find_token
from ..settings import IDENTITY_PROMPT, PLACEHOLDER

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class PatchscopeExpectation(Expectation[PatchscopeResult]):
    """``token``'s state after block ``layer`` (int or list), patched into ``target`` and
    decoded greedily, contains ``expect`` at all (``mode="all"``) or any layer."""

    source: str
    token: TokenSpec
    _: KW_ONLY
    layer: int | tuple[int, ...]
    expect: str | tuple[str, ...]
    target: str = IDENTITY_PROMPT
    target_layer: int | tuple[int, ...] | None = None
    target_token: TokenSpec = PLACEHOLDER
    max_new_tokens: int = 5
    mode: str = "all"

    row_fields = ("source", "token", "expect")
    label_fields = ("token", "layer", "target_layer", "expect")

    def __post_init__(self) -> None:
        checks.text("source", self.source)
        checks.text("target", self.target)
        checks.token_spec("token", self.token)
        checks.token_spec("target_token", self.target_token)
        object.__setattr__(self, "layer", checks.layers("layer", self.layer))
        if self.target_layer is not None:
            object.__setattr__(self, "target_layer",
                               checks.layers("target_layer", self.target_layer))
        expect = (self.expect,) if isinstance(self.expect, str) else self.expect
        if not isinstance(expect, list | tuple) or not expect or not all(
                isinstance(e, str) and e.strip() for e in expect):
            raise InterpError(
                f"expect must be a non-blank string or a list of them, got {self.expect!r}"
            )
        object.__setattr__(self, "expect", tuple(expect))
        checks.integer("max_new_tokens", self.max_new_tokens, minimum=1)
        checks.choice("mode", self.mode, ("all", "any"),
                      style="mode must be 'all' or 'any', got {value!r}")

    @property
    def expected(self) -> tuple[str, ...]:
        """``expect`` as a tuple (normalised in __post_init__)."""
        return self.expect if isinstance(self.expect, tuple) else (self.expect,)

    def validate(self, model: InterpModel) -> None:
        from ..probes.patchscope import layer_pairs

        layer_pairs(model, self.layer, self.target_layer)
        find_token(model.tokens(self.source).strs[0], self.token, self.source, "source")
        find_token(model.tokens(self.target).strs[0], self.target_token, self.target, "target")

    def run(self, model: InterpModel) -> PatchscopeResult:
        return model.patchscope(
            self.source, self.token, layer=self.layer, target=self.target,
            target_layer=self.target_layer, target_token=self.target_token,
            max_new_tokens=self.max_new_tokens, expected=self.expected[0].strip(),
        )

    def judge(self, result: PatchscopeResult) -> str | None:
        wanted = [e.strip() for e in self.expected]
        found = [any(w in text.strip() for w in wanted) for text in result.continuations]
        what = " or ".join(repr(w) for w in wanted)
        n = len(found)
        if self.mode == "all" and not all(found):
            failing = [i for i, ok in enumerate(found) if not ok]
            pairs = ", ".join(f"{s}->{t}" for s, t in (result.pairs[i] for i in failing))
            head = (f"patchscope: expected {what} in the continuation at every layer "
                    f"(mode='all'); {len(failing)} of {n} missing it (source->target layer): "
                    f"{pairs}")
        elif self.mode == "any" and not any(found):
            failing = list(range(n))
            head = (f"patchscope: expected {what} in the continuation at some layer "
                    f"(mode='any'); none of {n} has it")
        else:
            return None
        return f"{head}\n{result.table(failing)}"


class PatchscopeCodec(SnapshotCodec[PatchscopeResult]):
    """One row per (source layer, target layer): the continuation, and P(expected)."""

    kind = "patchscope"
    meta_schema = schema(source=is_str, source_position=is_int, target=is_str,
                   target_position=is_int, expected=is_opt_str)
    row_schema = schema(layers=is_str, text=is_str)
    optional_row = schema(p=is_number, steps=is_steps)
    identity = ("source", "source_position", "target", "target_position", "expected")
    row_keys = ("layers",)
    units = MappingProxyType({"p": "prob", "steps": "steps"})

    def summarize(self, result: PatchscopeResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "source": result.source,
                "source_position": result.source_position, "target": result.target,
                "target_position": result.target_position, "expected": result.expected}
        probs, margins, tokens = result.expected_prob, result.margins, result.tokens
        rows = [{"layers": f"{s}->{t}", "text": text}
                | ({"p": rounded(probs[i])} if probs else {})
                | ({"steps": steps_of(tokens[i], margins[i])} if margins and tokens else {})
                for i, ((s, t), text) in enumerate(zip(result.pairs, result.continuations,
                                                       strict=True))]
        return meta, rows

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes = []
        for o, n in zip(old_rows, new_rows, strict=True):
            changes += text_change(f"layers {o['layers']}:", o["text"], n["text"],
                                   o.get("steps"), n.get("steps"), tol.at(o, "steps", "steps"))
            if "p" in o and (size := number_change(o["p"], n.get("p"), tol.at(o, "p", "prob"))):
                changes.append(Change(size, f"layers {o['layers']}: P({old['expected']!r}) "
                                            f"{fmt(o['p'])} -> {fmt(n.get('p'))}"))
        return changes


def patchscope_figure(result: PatchscopeResult) -> str:
    """A table: source layer, target layer, P(expected), continuation."""
    head = "<tr><th>source</th><th>target</th>" + (
        f"<th>P({esc(repr(result.expected))})</th>" if result.expected_prob else "") + \
        "<th>continuation</th></tr>"
    rows = []
    for i, ((s, t), text) in enumerate(zip(result.pairs, result.continuations, strict=True)):
        prob = f"<td>{result.expected_prob[i]:.3f}</td>" if result.expected_prob else ""
        rows.append(f"<tr><td>{s}</td><td>{t}</td>{prob}<td><code>{esc(repr(text))}</code>"
                    "</td></tr>")
    title = (f"patchscope of {result.source_tokens[result.source_position]!r} in "
             f"{result.source!r} -> {result.target!r}")
    return f"<h4>{esc(title)}</h4><table class='ps'>{head}{''.join(rows)}</table>"


KIND = ExpectationKind(
    name="patchscope", expectation=PatchscopeExpectation, result=PatchscopeResult,
    help="assert what a hidden state says: token's state after block layer (int or list), "
         "patched into target (identity prompt) and decoded greedily, contains expect at "
         "all/any layers.",
    codec=PatchscopeCodec(), figure=patchscope_figure,
    example=(("The cat sat", " cat"), {"layer": [0, 1], "expect": "x", "mode": "any",
                                       "max_new_tokens": 2}),
)
