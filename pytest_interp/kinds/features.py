"""kinds layer: ``@pytest.mark.feature``: a sparse dictionary's latent fires, stays silent, or is
among the strongest at a position of a prompt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks
from ..codec import (
    EXACT,
    Change,
    SnapshotCodec,
    SnapshotFormatError,
    Tolerances,
    is_int,
    is_str,
    is_strs,
    is_top,
    number_change,
    rounded,
    schema,
)
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..report.draw import blue, esc, heatmap_svg, short
from ..results.features import FeaturesResult

if TYPE_CHECKING:
    from ..model import InterpModel

SHOWN = 5  # latents a failure, a snapshot row and a figure column show per position


@dataclass(frozen=True)
class FeatureExpectation(Expectation[FeaturesResult]):
    """Latent ``feature`` of dictionary ``sae`` at ``position`` of ``prompt``: its activation
    lies within [min, max] (``min=`` a little above 0: it fires; ``max=0``: it stays silent),
    and/or it is among the ``top_k`` strongest latents there."""

    prompt: str
    _: KW_ONLY
    sae: str
    feature: int
    position: int = -1
    min: float | None = None
    max: float | None = None
    top_k: int | None = None
    labels: str | None = None

    paths = ("labels",)
    label_fields = ("feature", "position")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("sae", self.sae)
        if not is_int(self.feature) or self.feature < 0:
            raise InterpError(f"feature must be a latent number >= 0, got {self.feature!r}")
        if not is_int(self.position):
            raise InterpError(f"position must be an int (negative from the end), got "
                              f"{self.position!r}")
        checks.bounds("min", self.min, "max", self.max)
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            raise InterpError(f"top_k must be an int >= 1, got {self.top_k!r}")
        if self.min is None and self.max is None and self.top_k is None:
            raise InterpError("no check given: pass min= (it fires), max= (max=0: it stays "
                              "silent) and/or top_k= (among the strongest)")

    def validate(self, model: InterpModel) -> None:
        model.dictionary(self.sae, labels=self.labels).check_latent(self.feature)
        checks.position(self.position, model.tokens(self.prompt).length, prompt=self.prompt)

    def run(self, model: InterpModel) -> FeaturesResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[FeatureExpectation]) -> list[FeaturesResult]:
        """One forward per token length for each dictionary; each prompt's result is
        memoised as ``interp_model.features`` memoises it."""
        from ..probes.features import Features

        out: dict[int, FeaturesResult] = {}
        groups: dict[tuple[str, str | None], list[int]] = {}
        for i, e in enumerate(expectations):
            groups.setdefault((e.sae, e.labels), []).append(i)
        for (sae, labels), members in groups.items():
            prompts = list(dict.fromkeys(expectations[i].prompt for i in members))
            asked = sorted({expectations[i].feature for i in members})
            found = dict(zip(prompts, model.features_of(prompts, sae, labels, asked),
                             strict=True))
            for i in members:  # memoised per prompt, with the recipe a variant re-runs
                prompt = expectations[i].prompt
                key = Features(prompt, sae, labels)
                model.memo.result(key, lambda r=found[prompt]: r)  # type: ignore[misc]
                out[i] = model.remember(key, _recipe(prompt, sae, labels, asked))
        return [out[i] for i in range(len(expectations))]

    def value_name(self) -> str:
        return f"activation of latent {self.feature}"

    def value(self, result: FeaturesResult) -> float:
        return result.activation(self.feature, self.position)

    def judge(self, result: FeaturesResult) -> str | None:
        value = self.value(result)
        problems = checks.outside(value, self.min, self.max)
        rank = result.rank(self.feature, self.position)
        if self.top_k is not None and (rank is None or rank > self.top_k):
            where = "silent" if rank is None else f"ranked {rank}"
            problems.append(f"{where}, expected among the top {self.top_k}")
        if not problems:
            return None
        p = self.position % len(result.str_tokens)
        instead = "\n".join(f"    {latent:>7}  {act:8.3f}  {label}"
                            for latent, act, label in result.top(self.position, SHOWN)) \
            or "    (no latent fires)"
        return (f"feature: {result.named(self.feature)} of {result.sae} at position "
                f"{self.position} ({result.str_tokens[p]!r}) of {self.prompt!r} is "
                f"{value:.3f}, {' and '.join(problems)}\n  the strongest latents there "
                f"(latent, activation, label):\n{instead}")


def _recipe(prompt: str, sae: str, labels: str | None, asked: list[int]
            ) -> Callable[[InterpModel], FeaturesResult]:
    """How a variant of the model computes one prompt's features."""
    return lambda m: m.features_of([prompt], sae, labels, asked)[0]


class FeaturesCodec(SnapshotCodec[FeaturesResult]):
    """One row per position: its strongest latents with their activations as a share of the
    strongest (so a rescaled dictionary or model reads the same), tie-aware: two latents
    that swap ranks within the tolerance are noise."""

    kind = "features"
    meta_schema = schema(sae=is_str, site=is_str, prompt=is_str, tokens=is_strs)
    row_schema = schema(position=is_int, top=is_top)
    identity = ("sae", "site", "prompt", "tokens")
    row_keys = ("position",)
    units = MappingProxyType({"top": "top"})

    def summarize(self, result: FeaturesResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "sae": result.sae, "site": result.site,
                "prompt": result.prompt, "tokens": list(result.str_tokens)}
        rows = []
        for p in range(len(result.str_tokens)):
            top = result.active(p)[:SHOWN]
            strongest = top[0][1] if top else 1.0
            rows.append({"position": p, "top": [[str(latent), rounded(act / strongest)]
                                                for latent, act in top]})
        return meta, rows

    def check_rows(self, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        super().check_rows(meta, rows)
        for number, row in enumerate(rows, 3):
            if not all(latent.isdigit() for latent, _ in row["top"]):
                raise SnapshotFormatError(number, "'top' lists latents by number")

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes: list[Change] = []
        for o, n in zip(old_rows, new_rows, strict=True):
            where = f"position {o['position']} ({old['tokens'][o['position']]!r})"
            changes += latent_changes(where, o["top"], n["top"], tol.at(o, "top", "top"))
        return changes


def latent_changes(where: str, old: list, new: list, tol: float) -> list[Change]:
    """The strongest latent (a swap with one within ``tol`` of it is noise), then each stored
    latent's share of the strongest: moved beyond ``tol``, or gone from the list."""
    out = []
    if bool(old) != bool(new):
        return [Change(EXACT, f"{where}: {'no latent fires' if not new else 'latents fire'} "
                              f"where {'some' if old else 'none'} did")]
    if old and old[0][0] != new[0][0]:
        a, b = old[0][0], new[0][0]
        shares = [dict(x).get(b) for x in (old,)] + [dict(new).get(a)]
        gap = min((1.0 - s for s in shares if s is not None), default=None)
        text = f"{where}: strongest latent {a} -> {b}"
        if gap is not None and gap <= tol:
            out.append(Change(0.0, f"{text}, a near-tie (within {tol:g})", noise=True))
        else:
            out.append(Change(EXACT, text, drift=(gap / tol) if gap and tol else None))
    shares_now = dict(new)
    floor = new[-1][1] if new else 0.0
    for latent, share in old:
        now = shares_now.get(latent)
        if now is None and share - floor > tol:
            out.append(Change((share - floor) / tol, f"{where}: latent {latent} ({share:.2f} of "
                                                     f"the strongest) left the top {len(new)}"))
        elif now is not None and (size := number_change(share, now, tol)):
            out.append(Change(size, f"{where}: latent {latent} {share:.2f} -> {now:.2f} of the "
                                    "strongest"))
    return out


def features_figure(result: FeaturesResult) -> str:
    """Latents x positions: the strongest latents' activations (a share of each latent's own
    maximum in the prompt), with their labels below."""
    shown = list(dict.fromkeys(latent for p in range(len(result.str_tokens))
                               for latent, _ in result.active(p)[:3]))[:16]
    if not shown:
        return "<h4>features: no latent fires on this prompt</h4>"
    dense = result.dense()[:, shown].T  # [latents, positions]
    peak = np.maximum(dense.max(1, keepdims=True), 1e-9)
    texts = [[f"{v:.1f}" if v > 0 else "" for v in row] for row in dense]
    title = f"{result.sae} at {result.site} on {result.prompt!r}: strongest latents"
    legend = "".join(f"<li><b>{latent}</b> {esc(result.label(latent))}</li>" for latent in shown)
    return (f"<h4>{esc(title)}</h4><div class='wide'>"
            + heatmap_svg(dense / peak, texts, [str(i) for i in shown],
                          [short(t) for t in result.str_tokens], blue, title)
            + f"</div><ul class='legend'>{legend}</ul>")


KIND = ExpectationKind(
    name="feature", expectation=FeatureExpectation, result=FeaturesResult,
    help="assert a sparse dictionary's latent at a position of a prompt: min= (it fires), "
         "max=0 (silent), top_k= (among the strongest); sae= a SAELens, Gemma Scope or "
         "sparsify folder or hub path.",
    codec=FeaturesCodec(), figure=features_figure,
)
