"""``@pytest.mark.activation_patching``: where (layer, position, head) a behaviour lives."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks, metrics
from ..codec import (
    Change,
    SnapshotCodec,
    SnapshotFormatError,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_numbers,
    is_opt_str,
    is_str,
    is_strs,
    number_change,
    rounded,
    schema,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..metrics import Metric
from ..report.draw import diverging, esc, heatmap_svg
from ..results import PatchingResult, token_position
from ..sites import PATCH_SITES

if TYPE_CHECKING:
    from ..model import InterpModel


@dataclass(frozen=True)
class PatchingExpectation(Expectation[PatchingResult]):
    """Recovery of the clean logit diff when a clean activation is patched into the corrupted
    run, at layer/position/head (each left out: every one), or where it peaks. With a clean -
    corrupted effect below ``min_effect`` (default: the metric's, ``metrics.MIN_EFFECT``)
    there is nothing to recover: the claim is INCONCLUSIVE."""

    clean: str
    corrupted: str
    _: KW_ONLY
    answer: str
    foil: str | None = None
    site: str = "resid_pre"
    layer: int | None = None
    position: int | str | None = None
    head: int | None = None
    min_recovery: float | None = None
    max_recovery: float | None = None
    peak_layer: tuple[int, int] | None = None
    metric: Metric = "logit_diff"
    method: str = "exact"
    verify_top_k: int = 0
    min_effect: float | None = None

    effect_name = "|clean - corrupted| metric"
    row_fields = ("clean", "corrupted", "answer", "foil")
    label_fields = ("site", "layer", "position", "head", "metric", "method")
    bound_fields = ("min_recovery", "max_recovery")

    def __post_init__(self) -> None:
        for name in ("clean", "corrupted", "answer"):
            checks.text(name, getattr(self, name))
        if self.foil is not None:
            checks.text("foil", self.foil)
        metrics.check(self.metric, self.foil)
        metrics.check_method(self.method, self.verify_top_k, self.metric)
        checks.choice("site", self.site, PATCH_SITES,
                      style="site {value!r} cannot be patched: use one of {choices}")
        checks.integer("layer", self.layer)
        checks.integer("head", self.head, minimum=0)
        if self.position is not None and not isinstance(self.position, str):
            checks.integer("position", self.position)
        checks.number("min_recovery", self.min_recovery)
        checks.number("max_recovery", self.max_recovery)
        checks.number("min_effect", self.min_effect)
        if self.min_effect is not None and self.min_effect < 0:
            raise InterpError(f"min_effect is the least |clean - corrupted| to divide by, >= 0, "
                              f"got {self.min_effect!r}")
        object.__setattr__(self, "peak_layer",
                           checks.int_pair("peak_layer", self.peak_layer, "(low, high)"))
        if self.min_recovery is None and self.max_recovery is None and self.peak_layer is None:
            raise InterpError("no check given: pass min_recovery=, max_recovery= or peak_layer=")
        heads = self.site == "head_out"
        if self.head is not None and not heads:
            raise InterpError(f"head= only applies to site='head_out', not {self.site!r}")
        if heads and self.position is not None and self.head is None:
            raise InterpError("site='head_out' with position= needs head= (which head)")
        if self.peak_layer is not None:
            if self.layer is not None:
                raise InterpError("peak_layer= looks across layers: do not also pass layer=")
            if not heads and self.position is None:
                raise InterpError("peak_layer= needs position= (which column's peak)")
            if heads and self.head is None:
                raise InterpError("peak_layer= with site='head_out' needs head=")

    @property
    def per_position(self) -> bool:
        return self.site != "head_out" or self.position is not None

    def validate(self, model: InterpModel) -> None:
        from ..probes.batching import paired_tokens

        clean, _ = paired_tokens(model, self.clean, self.corrupted)
        model.vocab.id(self.answer)
        if self.foil is not None:
            model.vocab.id(self.foil)
        if self.layer is not None:
            model.info.check_layer(self.layer)
        if self.head is not None:
            model.info.check_head(self.head)
        if self.peak_layer is not None:
            for bound in self.peak_layer:
                model.info.check_layer(bound, "peak_layer bound")
        if self.position is not None:
            token_position(clean.strs[0], self.position, self.clean)

    def run(self, model: InterpModel) -> PatchingResult:
        return model.activation_patching(
            self.clean, self.corrupted, answer=self.answer, foil=self.foil, site=self.site,
            per_position=self.per_position, metric=self.metric, method=self.method,
            verify_top_k=self.verify_top_k)

    @property
    def one_cell(self) -> bool:
        """Whether layer/position/head name one cell (a number per prompt)."""
        if self.layer is None:
            return False
        return self.head is not None if self.site == "head_out" else self.position is not None

    def value_name(self) -> str | None:
        return "recovery" if self.one_cell else None

    def value(self, result: PatchingResult) -> float:
        assert self.layer is not None
        index: tuple[int, ...] = (result.layer_index(self.layer),)
        if self.head is not None:
            index += (self.head,)
        if self.position is not None:
            index += (result.position_index(self.position),)
        return float(result.recovery[index])

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[PatchingExpectation]) -> list[PatchingResult]:
        """One exact cell per row: batched over rows (see ``patch_cells``); else a sweep (or
        an attribution estimate) per row."""
        if not all(e.one_cell and e.method == "exact" for e in expectations):
            return super().run_many(model, expectations)
        from ..probes.patching import Cell, patch_cells

        return patch_cells(model, [
            Cell(e.clean, e.corrupted, e.answer, e.foil, e.site,  # type: ignore[arg-type]
                 e.layer, e.position, e.head, e.metric)  # type: ignore[arg-type]
            for e in expectations])

    def _where(self, result: PatchingResult, layer: int, col: int) -> str:
        parts = [f"layer {layer}"]
        if self.site == "head_out":
            parts.append(f"head {self.head if self.per_position else col}")
        if self.per_position:
            token = result.clean_tokens[col]
            given = self.position if isinstance(self.position, int) else col
            parts.append(f"position {given} ({token!r})")
        return ", ".join(parts)

    def effect(self, result: PatchingResult) -> float:
        return result.effect

    @property
    def effect_floor(self) -> float:
        return metrics.min_effect(self.metric, self.min_effect)

    def effect_text(self, result: PatchingResult, effect: float) -> str:
        return (f"activation_patching: no effect to recover: the clean {result.metric} is "
                f"{result.clean_logit_diff:+.3f} and the corrupted "
                f"{result.corrupted_logit_diff:+.3f}, an effect of {effect:+.3f}, below "
                f"min_effect={self.effect_floor:g}; recovery would divide by it: pick prompts "
                "on which the model behaves differently, or lower min_effect=")

    def judge(self, result: PatchingResult) -> str | None:
        none = self.no_effect(result)
        if none is not None:
            return none
        values, _, _ = result.grid_2d(self.head if self.per_position else None)
        n_layers, n_cols = values.shape
        layers = [result.layer_index(self.layer)] if self.layer is not None else list(
            range(n_layers))
        if self.site == "head_out" and not self.per_position:
            cols = [self.head] if self.head is not None else list(range(n_cols))
        elif self.position is not None:
            cols = [result.position_index(self.position)]
        else:
            cols = list(range(n_cols))
        cells = [(layer, col) for layer in layers for col in cols]
        problems: list[str] = []
        mark = None
        for bound, pick, wrong in (
                (self.min_recovery, min, lambda v, b: v < b),
                (self.max_recovery, max, lambda v, b: v > b)):
            if bound is None:
                continue
            layer, col = pick(cells, key=lambda c: values[c])
            if wrong(values[layer, col], bound):
                mark = mark or (layer, col)
                name = "min_recovery" if pick is min else "max_recovery"
                verb = "is estimated to recover" if result.estimate else "recovers"
                problems.append(
                    f"{self.site} at {self._where(result, layer, col)} {verb} "
                    f"{values[layer, col]:.2f} of the clean {result.metric}, expected "
                    f"{name}={bound}"
                )
        if self.peak_layer is not None:
            col = cols[0]
            peak = int(values[:, col].argmax())
            lo, hi = (result.layer_index(b) for b in self.peak_layer)
            if not lo <= peak <= hi:
                mark = mark or (peak, col)
                where = self._where(result, peak, col).split(", ", 1)[1]
                what = "estimated recovery" if result.estimate else "recovery"
                problems.append(
                    f"{self.site} {what} at {where} peaks at layer {peak} "
                    f"({values[peak, col]:.2f}), expected peak_layer in {self.peak_layer}"
                )
        if not problems:
            return None
        head = "\n".join(f"activation_patching: {p}" for p in problems)
        grid = result.grid(mark=mark, head=self.head if self.per_position else None)
        return f"{head}\n{grid}"


_COLUMNS = ("positions", "heads", "recovery")  # what a row's list of recovery values is over


class PatchingCodec(SnapshotCodec[PatchingResult]):
    """One row per layer (and head, for head_out by position): recovery per column."""

    kind = "patching"
    meta_schema = schema(site=is_str, clean=is_str, corrupted=is_str, answer=is_opt_str,
                   foil=is_opt_str, tokens=is_strs, clean_logit_diff=is_number,
                   corrupted_logit_diff=is_number)
    optional_meta = schema(metric=is_str, method=is_str)  # stored when not the default
    row_schema = schema(layer=is_int)
    identity = ("site", "clean", "corrupted", "answer", "foil", "tokens", "metric", "method")
    units = MappingProxyType(dict.fromkeys(_COLUMNS, "recovery"))
    meta_units = MappingProxyType({"clean_logit_diff": "logit", "corrupted_logit_diff": "logit"})

    def summarize(self, result: PatchingResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "site": result.site, "clean": result.clean,
                "corrupted": result.corrupted, "answer": result.answer, "foil": result.foil,
                "tokens": list(result.clean_tokens),
                "clean_logit_diff": rounded(result.clean_logit_diff),
                "corrupted_logit_diff": rounded(result.corrupted_logit_diff)}
        if result.metric != "logit diff":
            meta["metric"] = result.metric
        if result.estimate:
            meta["method"] = result.method
        rec = result.recovery
        columns = "heads" if result.heads and not result.per_position else "positions"
        rows: list[dict[str, Any]] = []
        for layer in range(rec.shape[0]):
            if rec.ndim == 3:
                rows += [{"layer": layer, "head": h,
                          "recovery": [rounded(x, 3) for x in rec[layer, h]]}
                         for h in range(rec.shape[1])]
            else:
                rows.append({"layer": layer, columns: [rounded(x, 3) for x in rec[layer]]})
        return meta, rows

    def check_rows(self, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        super().check_rows(meta, rows)
        n_tokens = len(meta["tokens"])
        for number, row in enumerate(rows, 3):
            columns = [k for k in _COLUMNS if k in row]
            if len(columns) != 1 or not is_numbers(row[columns[0]]):
                raise SnapshotFormatError(number, "expected one list of recovery values: "
                                                  "'positions', 'heads' or 'recovery'")
            if "head" in row and not is_int(row["head"]):
                raise SnapshotFormatError(number, "'head' is not an integer")
            if columns[0] == "positions" and len(row["positions"]) > n_tokens:
                raise SnapshotFormatError(number, f"more positions than the {n_tokens} "
                                                  "stored tokens")

    def row_shape(self, row: dict[str, Any]) -> str:
        key = next(k for k in _COLUMNS if k in row)
        head = f" head {row['head']}" if "head" in row else ""
        return f"layer {row['layer']}{head}, {len(row[key])} {key}"

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes = []
        for name in ("clean_logit_diff", "corrupted_logit_diff"):
            if size := number_change(old[name], new[name], tol.at(old, name, "logit")):
                changes.append(Change(size, f"{name.replace('_', ' ')} {fmt(old[name], '+.3f')} "
                                            f"-> {fmt(new[name], '+.3f')}"))
        for o, n in zip(old_rows, new_rows, strict=True):
            key = next(k for k in _COLUMNS if k in o)
            for i, (a, b) in enumerate(zip(o[key], n[key], strict=True)):
                if size := number_change(a, b, tol.at(o, key, "recovery", i)):
                    col = f"pos {i} ({old['tokens'][i]!r})" if key != "heads" else f"H{i}"
                    head = f" H{o['head']}" if "head" in o else ""
                    changes.append(Change(size, f"{old['site']} L{o['layer']}{head} {col}: "
                                                f"recovery {fmt(a)} -> {fmt(b)}"))
        return changes


def patching_figure(result: PatchingResult) -> str:
    """The recovery heatmap: layers down, positions (or heads) across."""
    values, labels, axis = result.grid_2d()
    texts = [["·" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values]
    how = f" [{result.how}]" if result.how else ""
    title = (f"{result.site} patching recovery{how}, rows layer, columns {axis} (clean "
             f"{result.clean_logit_diff:+.2f}, corrupted {result.corrupted_logit_diff:+.2f})")
    return (f"<h4>{esc(title)}</h4>" + heatmap_svg(
        values, texts, [str(i) for i in range(values.shape[0])], labels, diverging, title))


KIND = ExpectationKind(
    name="activation_patching", expectation=PatchingExpectation, result=PatchingResult,
    help="assert where a behaviour lives: recovery of the clean logit diff when a clean "
         "activation is patched into the corrupted run, at layer/position/head, or its "
         "peak_layer=(lo, hi); method='attribution' estimates it from one backward pass.",
    codec=PatchingCodec(), figure=patching_figure,
    example=(("The cat sat on the", "The dog sat on the"),
             {"answer": " mat", "foil": " rug", "layer": 1, "position": 1,
              "min_recovery": -10}),
)
