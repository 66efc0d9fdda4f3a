"""kinds layer: ``@pytest.mark.lens``: where a target token shows up in the residual stream."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks
from ..codec import (
    Change,
    SnapshotCodec,
    SnapshotFormatError,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_str,
    is_strs,
    is_top,
    number_change,
    rounded,
    schema,
    top_changes,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..files import check_lens_folder
from ..lenses import LOGIT, Lens, loaded_lens, named_lens
from ..record import ORIGINS, recording
from ..report.draw import blue, esc, heatmap_svg, short
from ..results import LensResult

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class LensExpectation(Expectation[LensResult]):
    """``top_k``/``min_prob`` of ``target`` at block ``layer``'s output, or ``emerges_by=L``:
    in the top ``top_k`` (default 1) from layer L through the last."""

    prompt: str
    target: str
    _: KW_ONLY
    layer: int | None = None
    position: int = -1
    top_k: int | None = None
    min_prob: float | None = None
    emerges_by: int | None = None
    lens: Lens | str = LOGIT

    paths = ("lens",)
    row_fields = ("prompt", "target")
    label_fields = ("target", "layer", "position", "lens")
    bound_fields = ("min_prob", "")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("target", self.target)
        if not isinstance(self.lens, str):
            if not hasattr(self.lens, "transform_hidden"):
                raise InterpError(f"lens must be 'logit', a tuned-lens folder or a Lens, got "
                                  f"{self.lens!r}")
        else:
            checks.text("lens", self.lens)
        object.__setattr__(self, "lens", named_lens(self.lens))
        checks.integer("layer", self.layer)
        checks.required_int("position", self.position)
        checks.integer("top_k", self.top_k, minimum=1)
        checks.integer("emerges_by", self.emerges_by)
        checks.probability("min_prob", self.min_prob)
        if self.top_k is None and self.min_prob is None and self.emerges_by is None:
            raise InterpError("no check given: pass top_k=, min_prob= or emerges_by=")
        if self.emerges_by is not None and self.layer is not None:
            raise InterpError(
                "layer= and emerges_by= are exclusive: emerges_by checks every layer from it on"
            )
        if self.emerges_by is not None and self.min_prob is not None:
            raise InterpError(
                "min_prob= does not combine with emerges_by= (emergence is by rank: use top_k=)"
            )
        if self.emerges_by is None and self.layer is None:
            raise InterpError("top_k= and min_prob= need layer= (a block index, -1 for the last)")

    def check_files(self) -> None:
        if isinstance(self.lens, str):
            check_lens_folder(self.lens)

    def validate(self, model: InterpModel) -> None:
        info = model.info
        if self.layer is not None:
            info.check_layer(self.layer)
        if self.emerges_by is not None:
            info.check_layer(self.emerges_by, "emerges_by")
        checks.position(self.position, model.tokens(self.prompt).length, prompt=self.prompt)
        model.vocab.id(self.target)

    def run(self, model: InterpModel) -> LensResult:
        return model.lens(self.prompt, lens=self.lens, positions=self.position)

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[LensExpectation]) -> list[LensResult]:
        """A dataset's rows: one batched lens run per lens and position."""
        from ..probes.lens import run_lenses

        out: dict[int, LensResult] = {}
        groups: dict[tuple[object, int], list[int]] = {}
        for i, e in enumerate(expectations):  # a Lens object is not hashable: by identity
            key = e.lens if isinstance(e.lens, str) else id(e.lens)
            groups.setdefault((key, e.position), []).append(i)
        for (_, position), rows in groups.items():
            lens = loaded_lens(expectations[rows[0]].lens, model.tuned_lenses)
            results = run_lenses(model, [expectations[i].prompt for i in rows],
                                 positions=position, lens=lens)
            out.update(zip(rows, results, strict=True))
        return [out[i] for i in range(len(expectations))]

    def value_name(self) -> str | None:
        single = self.layer is not None and self.min_prob is not None and self.top_k is None
        return "probability" if single else None

    def value(self, result: LensResult) -> float:
        assert self.layer is not None
        return result.prob(self.target, result.layer_index(self.layer), self.position)

    def judge(self, result: LensResult) -> str | None:
        target, pos = self.target, self.position
        problems: list[str] = []
        mark = None
        if self.layer is not None:
            layer = result.layer_index(self.layer)
            mark = layer
            rank, prob = result.rank(target, layer, pos), result.prob(target, layer, pos)
            if self.top_k is not None and rank >= self.top_k:
                problems.append(
                    f"{target!r} has rank {rank} at layer {layer}, expected top_k={self.top_k} "
                    f"(rank < {self.top_k})"
                )
            if self.min_prob is not None and prob < self.min_prob:
                problems.append(
                    f"{target!r} has prob {prob:.4f} at layer {layer}, expected "
                    f"min_prob={self.min_prob}"
                )
        if self.emerges_by is not None:
            top_k = self.top_k or 1
            by = result.layer_index(self.emerges_by)
            mark = by
            emerged = result.emergence_layer(target, top_k=top_k, position=pos)
            if emerged is None:
                problems.append(
                    f"{target!r} is not in the top-{top_k} at the last layer, expected it to "
                    f"emerge by layer {by} (emerges_by={self.emerges_by})"
                )
            elif emerged > by:
                problems.append(
                    f"{target!r} stays in the top-{top_k} only from layer {emerged}, expected by "
                    f"layer {by} (emerges_by={self.emerges_by})"
                )
        if not problems:
            return None
        head = "\n".join(f"lens: {p}" for p in problems)
        return f"{head}\n{result.table(target, position=pos, mark=mark)}"


class LensCodec(SnapshotCodec[LensResult]):
    """One row per (layer, position): the top-3 tokens with their probabilities."""

    kind = "lens"
    meta_schema = schema(lens=is_str, prompt=is_str, tokens=is_strs,
                         positions=lambda x: isinstance(x, list) and all(is_int(p) for p in x))
    row_schema = schema(layer=is_int, position=is_int)
    optional_row = schema(top=is_top, rank=is_int, p=is_number)
    identity = ("lens", "prompt", "tokens", "positions", "target")
    row_keys = ("layer", "position")
    units = MappingProxyType({"top": "top", "p": "prob"})

    def summarize(self, result: LensResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        n = len(result.str_tokens)
        meta = {"model": result.model, "lens": result.lens, "prompt": result.prompt,
                "tokens": list(result.str_tokens), "positions": list(result.positions)}
        target = result.target
        if target is not None:  # focused: the target's trajectory only
            meta["target"] = target
            return meta, [{"layer": layer, "position": pos,
                           "rank": result.rank(target, layer, pos - n),
                           "p": rounded(result.prob(target, layer, pos - n))}
                          for layer in range(result.n_layers) for pos in result.positions]
        rows = [{"layer": layer, "position": pos,
                 "top": [[t, rounded(p)] for t, p in result.top(layer, 3, pos - n)]}
                for layer in range(result.n_layers) for pos in result.positions]
        return meta, rows

    def check_rows(self, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        super().check_rows(meta, rows)
        need = ("rank", "p") if "target" in meta else ("top",)
        for number, row in enumerate(rows, 3):
            missing = [k for k in need if k not in row]
            if missing:
                raise SnapshotFormatError(number, f"{missing[0]!r} is missing")
            if not 0 <= row["position"] < len(meta["tokens"]):
                raise SnapshotFormatError(number, f"position {row['position']} is outside the "
                                                  f"{len(meta['tokens'])} stored tokens")

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        tokens = old["tokens"]
        changes: list[Change] = []
        for o, n in zip(old_rows, new_rows, strict=True):
            pos = o["position"]
            where = f"layer {o['layer']} pos {pos - len(tokens)} ({tokens[pos]!r})"
            if "top" in o:
                changes += top_changes(where, o["top"], n["top"], tol.at(o, "top", "top"))
            elif size := number_change(o["p"], n["p"], tol.at(o, "p", "prob")):
                changes.append(Change(size, f"{where}: {old['target']!r} rank {o['rank']} -> "
                                            f"{n['rank']}, P {fmt(o['p'])} -> {fmt(n['p'])}"))
        return changes


FIGURE_POSITIONS = 32  # the figure reads at most the last 32 prompt positions
CHUNK = 4  # positions decoded at once for the figure (a [layers, 4, vocab] array at a time)


def _top_per_cell(result: LensResult) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The top token id and its probability per (layer, position): at every prompt position
    (the last FIGURE_POSITIONS) when the result's model is at hand, else at the result's own
    positions. Other positions are decoded a few at a time and dropped."""
    n = len(result.str_tokens)
    wanted = list(range(max(0, n - FIGURE_POSITIONS), n))
    origin = ORIGINS.get(result)
    model = origin[0] if origin is not None else None
    parts = [result]
    if set(wanted) - set(result.positions) and model is not None and not model.closed:
        with recording():  # read for the figure only: not this test's results
            try:
                parts = [model.lens(result.prompt, lens=result.lens,
                                    positions=wanted[i:i + CHUNK])
                         for i in range(0, len(wanted), CHUNK)]
            except InterpError:
                parts = [result]
    ids, probs, positions = [], [], []
    for part in parts:
        log_probs = part.log_probs  # [L, P, V]
        top = log_probs.argmax(-1)
        ids.append(top)
        probs.append(np.exp(np.take_along_axis(log_probs, top[..., None], -1)[..., 0]))
        positions += list(part.positions)
    return np.concatenate(ids, 1), np.concatenate(probs, 1), positions


def lens_figure(result: LensResult) -> str:
    """Layers x positions heatmap over the prompt: the top token in each cell, colour = its
    probability; the positions the test read are starred."""
    top, values, positions = _top_per_cell(result)
    texts = [[short(result.vocab.decode_one(int(top[layer, p]))) for p in range(top.shape[1])]
             for layer in range(top.shape[0])]
    asked = set(result.positions)
    cols = [short(result.str_tokens[p]) + ("*" if p in asked and len(asked) < len(positions)
                                           else "") for p in positions]
    title = f"{result.lens} lens on {result.prompt!r}: top token per layer, colour = its prob"
    if len(asked) < len(positions):
        title += " (* = the positions the test read)"
    return (f"<h4>{esc(title)}</h4><div class='wide'>"
            + heatmap_svg(values, texts, [str(i) for i in range(len(texts))], cols, blue, title)
            + "</div>")


KIND = ExpectationKind(
    name="lens", expectation=LensExpectation, result=LensResult,
    help="assert where target shows up in the residual stream: top_k/min_prob at layer, or "
         "emerges_by=L (in the top_k from layer L on); lens='logit' or a tuned-lens folder.",
    codec=LensCodec(), figure=lens_figure,
    example=(("The cat sat on the", " mat"), {"layer": -1, "top_k": 5}),
)
