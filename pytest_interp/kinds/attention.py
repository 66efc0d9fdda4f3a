"""kinds layer: ``@pytest.mark.attention``: what a head (or some head) does."""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks
from ..codec import (
    EXACT,
    Change,
    SnapshotCodec,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_str,
    number_change,
    rounded,
    schema,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..report.draw import blue, esc, heatmap_svg, png_data_uri
from ..results import ATTENTION_KINDS, AttentionResult

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class AttentionExpectation(Expectation[AttentionResult]):
    """``head=(layer, head)``'s ``kind`` score within [min_score, max_score]; head=None:
    some head's. On ``prompt``, or (None) on seeded random tokens repeated twice."""

    prompt: str | None = None
    _: KW_ONLY
    kind: str
    head: tuple[int, int] | None = None
    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        if self.prompt is not None:
            checks.text("prompt", self.prompt)
        checks.choice("kind", self.kind, ATTENTION_KINDS)
        object.__setattr__(self, "head", checks.int_pair("head", self.head, "(layer, head)"))
        checks.bounds("min_score", self.min_score, "max_score", self.max_score)
        if self.min_score is None and self.max_score is None:
            raise InterpError("no check given: pass min_score= and/or max_score=")

    def validate(self, model: InterpModel) -> None:
        if self.prompt is not None and model.tokens(self.prompt).length < 2:
            raise InterpError(f"the prompt {self.prompt!r} has one token: attention scores "
                              "need two or more")
        if self.head is not None:
            model.info.check_layer(self.head[0])
            model.info.check_head(self.head[1])

    def run(self, model: InterpModel) -> AttentionResult:
        return model.attention(self.prompt)

    bound_fields = ("min_score", "max_score")
    label_fields = ("kind", "head")

    def value_name(self) -> str | None:
        return f"{self.kind} score" if self.head is not None else None

    def value(self, result: AttentionResult) -> float:
        assert self.head is not None
        return float(result.score(self.kind, *result.head_index(*self.head)))

    def measured(self, result: AttentionResult) -> str | None:
        """Without ``head``: the highest score of the kind, and whose it is."""
        if self.head is not None:
            return super().measured(result)
        scores = result.scores[self.kind]
        layer, head = np.unravel_index(int(scores.argmax()), scores.shape)
        return f"highest {self.kind} score {float(scores.max()):.4g} (L{layer}H{head})"

    def point(self, result: AttentionResult) -> dict[str, Any] | None:
        """Without ``head``: the highest score of the kind (the trend of "some head")."""
        if self.head is not None:
            return super().point(result)
        return {"name": f"highest {self.kind} score",
                "value": float(result.scores[self.kind].max()),
                "low": self.min_score, "high": self.max_score}

    def judge(self, result: AttentionResult) -> str | None:
        lo, hi = self.min_score, self.max_score

        def ok(layer: int, head: int) -> bool:
            value = result.score(self.kind, layer, head)
            return (lo is None or value >= lo) and (hi is None or value <= hi)

        bounds = " and ".join(f"{name}={v}" for name, v in (("min_score", lo), ("max_score", hi))
                              if v is not None)
        best = result.best(self.kind)
        if self.head is not None:
            layer, head = result.head_index(*self.head)
            if ok(layer, head):
                return None
            problem = (f"L{layer}H{head} has {self.kind} score "
                       f"{result.score(self.kind, layer, head):.3f} (label "
                       f"{result.label(layer, head)}), expected {bounds}")
            rows, mark = [(layer, head), *[h for h in best if h != (layer, head)]], [(layer, head)]
        else:
            if any(ok(layer, head) for layer in range(result.n_layers)
                   for head in range(result.n_heads)):
                return None
            top = best[0]
            problem = (f"no head's {self.kind} score meets {bounds}; the highest is "
                       f"L{top[0]}H{top[1]} at {result.score(self.kind, *top):.3f}")
            rows, mark = best, []
        return f"attention: {problem}\n{result.table(rows, mark)}"


class AttentionCodec(SnapshotCodec[AttentionResult]):
    """One row per head: every score and the label."""

    kind = "attention"
    meta_schema = schema(seed=is_int, n=is_int)
    row_schema = schema(head=is_str, label=is_str, **dict.fromkeys(ATTENTION_KINDS, is_number))
    identity = ("prompt", "seed", "n", "heads")
    row_keys = ("head",)
    units = MappingProxyType({k: "logit" if k == "entropy" else "prob" for k in ATTENTION_KINDS})

    def summarize(self, result: AttentionResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta: dict[str, Any] = {"model": result.model, "prompt": result.prompt,
                                "seed": result.seed, "n": result.n}
        heads = [(layer, head) for layer in range(result.n_layers)
                 for head in range(result.n_heads)]
        if result.selected is not None:  # narrowed: these heads only
            heads = list(result.selected)
            meta["heads"] = [f"L{layer}H{head}" for layer, head in heads]
        rows = [{"head": f"L{layer}H{head}"}
                | {k: rounded(result.scores[k][layer, head], 3) for k in ATTENTION_KINDS}
                | {"label": result.labels[layer][head]} for layer, head in heads]
        return meta, rows

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        """Scores within tolerance (attention mass: the probability tolerance; entropy, in
        nats: the logit one); a label flip counts only when some score moved, and is shown on
        the score that explains it (the new label's kind, else the old one's)."""
        changes = []
        for o, n in zip(old_rows, new_rows, strict=True):
            moved = {k: s for k in ATTENTION_KINDS  # entropy is in nats: the logit unit
                     if (s := number_change(o[k], n[k], tol.at(o, k, self.units[k])))}
            flip = o["label"] != n["label"] and bool(moved)
            if flip:
                named = [k for k in (n["label"], o["label"]) if k in moved]
                flip_on = named[0] if named else next(iter(moved))
            for k, size in moved.items():
                label = flip and k == flip_on
                note = f" (label {o['label']} -> {n['label']})" if label else ""
                changes.append(Change(size + (EXACT if label else 0),
                                      f"{o['head']}: {k} {fmt(o[k])} -> {fmt(n[k])}{note}",
                                      drift=size))
        return changes


THUMBNAILS = 12  # pattern thumbnails per figure: the heads with the clearest roles
SHORT = {"previous_token": "prev", "induction": "ind", "first_token": "first", "self": "self",
         "mixed": ""}


def attention_figure(result: AttentionResult) -> str:
    """Every head's role as a layers x heads grid (colour = the score of its label, or its
    highest score if mixed), then pattern thumbnails of the heads with the clearest roles."""
    where = "the repeated random sequence" if result.prompt is None else repr(result.prompt)
    kinds = [k for k in ATTENTION_KINDS if k != "entropy"]
    best = np.max([result.scores[k] for k in kinds], axis=0)
    values = np.array([[result.scores[label][layer, head] if label in kinds
                        else best[layer, head]
                        for head, label in enumerate(result.labels[layer])]
                       for layer in range(result.n_layers)])
    texts = [[SHORT.get(label, label) for label in row] for row in result.labels]
    title = f"attention heads on {where}: label per head, colour = its score"
    grid = heatmap_svg(values, texts, [f"L{i}" for i in range(result.n_layers)],
                       [f"H{h}" for h in range(result.n_heads)], blue, title)
    ranked = sorted((result.labels[layer][head] == "mixed", -values[layer, head], layer, head)
                     for layer in range(result.n_layers) for head in range(result.n_heads))
    shown = sorted((layer, head) for _, _, layer, head in ranked[:THUMBNAILS])
    cells = []
    for layer, head in shown:
        label = result.labels[layer][head]
        uri = png_data_uri(result.patterns[layer, head])
        cells.append(f"<figure class='head {label}'><img src='{uri}' alt='L{layer}H{head}'>"
                     f"<figcaption>L{layer}H{head} {label}</figcaption></figure>")
    some = "" if len(shown) == result.n_layers * result.n_heads else \
        f", the {len(shown)} with the clearest roles"
    return (f"<h4>{esc(title)}</h4>{grid}<h4>attention patterns on {esc(where)}{some} (darker "
            f"= more attention)</h4><div class='heads'>{''.join(cells)}</div>")


KIND = ExpectationKind(
    name="attention", expectation=AttentionExpectation, result=AttentionResult,
    help="assert what heads do: head=(layer, head)'s kind score (previous_token, induction, "
         "first_token, self, entropy) within [min_score, max_score]; head=None: some head.",
    codec=AttentionCodec(), figure=attention_figure,
    example=((), {"kind": "self", "head": (0, 1), "max_score": 1}),
)
