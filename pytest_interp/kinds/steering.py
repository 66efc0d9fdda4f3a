"""kinds layer: ``@pytest.mark.steering``: how much a steering vector moves the output."""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import checks, metrics
from ..codec import (
    Change,
    SnapshotCodec,
    Steps,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_opt_str,
    is_steps,
    is_str,
    is_top,
    number_change,
    rounded,
    schema,
    steps_of,
    text_change,
    top_changes,
)
from ..dictionaries import LATENT_VECTOR
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..files import check_vector_file
from ..metrics import Metric
from ..report.draw import esc
from ..results import SteeringResult
from ..sites import STEER_SITES

if TYPE_CHECKING:
    from collections.abc import Sequence

    from torch import Tensor

    from ..model import InterpModel
    from ..probes.steering import Steering


@dataclass(frozen=True)
class SteeringExpectation(Expectation[SteeringResult]):
    """``coef`` times a vector (positive - negative activations, or ``vector=FILE``) added at
    ``layer`` moves ``target`` - ``foil`` by ``min_delta``/``max_delta``, or steers the
    generation to contain ``generation_contains``."""

    prompt: str
    _: KW_ONLY
    layer: int
    coef: float | tuple[float, ...]
    target: str
    positive: str | tuple[str, ...] | None = None
    negative: str | tuple[str, ...] | None = None
    vector: str | None = None
    foil: str | None = None
    site: str = "resid_pre"
    positions: str | int = "all"
    min_delta: float | None = None
    max_delta: float | None = None
    generation_contains: str | tuple[str, ...] | None = None
    max_new_tokens: int = 20
    control: int = 0
    metric: Metric | None = None

    paths = ("vector",)
    row_fields = ("prompt", "target", "foil")
    label_fields = ("layer", "coef", "target", "site", "metric")
    bound_fields = ("min_delta", "max_delta")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("target", self.target)
        if self.foil is not None:
            checks.text("foil", self.foil)
        checks.required_int("layer", self.layer)
        coefs = (self.coef,) if not isinstance(self.coef, list | tuple) else tuple(self.coef)
        if not coefs:
            raise InterpError("coef must be a number or a non-empty list of numbers, got []")
        for c in coefs:
            if c is None:
                raise InterpError("coef must be a finite number, got None")
            checks.number("coef", c)
        object.__setattr__(self, "coef", coefs)
        checks.choice("site", self.site, STEER_SITES,
                      style="site {value!r} cannot be steered: use one of {choices}")
        if self.positions not in ("all", "last") and (
                isinstance(self.positions, bool) or not isinstance(self.positions, int)):
            raise InterpError(f"positions must be 'all', 'last' or an int N, got "
                              f"{self.positions!r}")
        if self.vector is not None:
            checks.text("vector", self.vector)
            if self.positive is not None or self.negative is not None:
                raise InterpError("pass either vector= or positive= and negative=, not both")
        elif self.positive is None or self.negative is None:
            raise InterpError("no vector: pass positive= and negative= prompts, or vector=FILE")
        else:
            pos, neg = checks.texts("positive", self.positive), checks.texts("negative",
                                                                              self.negative)
            if len(pos) != len(neg):
                raise InterpError(f"{len(pos)} positive but {len(neg)} negative prompts: pass "
                                  "as many of each")
            object.__setattr__(self, "positive", pos if len(pos) > 1 else pos[0])
            object.__setattr__(self, "negative", neg if len(neg) > 1 else neg[0])
        checks.bounds("min_delta", self.min_delta, "max_delta", self.max_delta)
        if self.generation_contains is not None:
            object.__setattr__(self, "generation_contains",
                               checks.texts("generation_contains", self.generation_contains))
        checks.integer("max_new_tokens", self.max_new_tokens, minimum=1)
        checks.required_int("control", self.control, minimum=0)
        if self.metric is not None:
            metrics.check(self.metric, self.foil)
        if self.control and (len(coefs) != 1 or (self.min_delta is None) == (
                self.max_delta is None)):
            raise InterpError("control=N compares one coef's delta with random vectors: pass "
                              "one coef and one of min_delta= or max_delta=")
        if self.min_delta is None and self.max_delta is None and self.generation_contains is None:
            raise InterpError("no check given: pass min_delta=, max_delta= or generation_contains=")

    def with_root(self, root: Path) -> SteeringExpectation:
        if self.vector is not None and self.vector.startswith(LATENT_VECTOR):
            return self  # a latent's direction: the dictionary is found from the rootdir
        return super().with_root(root)

    def check_files(self) -> None:
        if self.vector is not None and not self.vector.startswith(LATENT_VECTOR):
            check_vector_file(self.vector)

    @property
    def coefs(self) -> tuple[float, ...]:
        return self.coef if isinstance(self.coef, tuple) else (self.coef,)

    def steering_vector(self, model: InterpModel) -> Tensor:
        if self.vector is not None:
            return model.load_vector(self.vector)
        assert self.positive is not None and self.negative is not None
        return model.steering_vector(self.positive, self.negative, layer=self.layer,
                                     site=self.site)  # type: ignore[arg-type]

    def validate(self, model: InterpModel) -> None:
        model.info.check_layer(self.layer)
        model.tokens(self.prompt)
        model.vocab.id(self.target)
        if self.foil is not None:
            model.vocab.id(self.foil)

    def run(self, model: InterpModel) -> SteeringResult:
        vector = self.steering_vector(model)
        result = model.steer(
            self.prompt, vector, layer=self.layer, coef=self.coefs,
            site=self.site, positions=self.positions,
            target=self.target, foil=self.foil, metric=self.metric,
            max_new_tokens=self.max_new_tokens if self.generation_contains else 0,
        )
        if not self.control:
            return result
        from ..probes.steering import steer_many

        controls = steer_many(model, self._controls(vector))
        return dataclasses.replace(result, controls=tuple(float(c.delta[0]) for c in controls))

    def _spec(self, vector: Tensor, *, generate: bool = True) -> Steering:
        from ..probes.steering import Steering, Vector

        return Steering(self.prompt, Vector(vector), layer=self.layer, coef=self.coefs,
                        site=self.site, positions=self.positions,  # type: ignore[arg-type]
                        target=self.target, foil=self.foil, metric=self.metric,
                        max_new_tokens=self.max_new_tokens
                        if generate and self.generation_contains else 0)

    def _controls(self, vector: Tensor) -> list[Steering]:
        """The ``control`` random vectors of ``vector``'s norm, as steering specs."""
        from ..probes.steering import random_like

        return [self._spec(random_like(vector, seed), generate=False)
                for seed in range(self.control)]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[SteeringExpectation]) -> list[SteeringResult]:
        """Every row's steering and its controls in shared forward passes (``steer_many``:
        rows of one token length batched), rather than one pass per row and control."""
        from ..probes.steering import steer_many

        specs: list[Steering] = []
        spans: list[tuple[int, int]] = []
        for e in expectations:
            vector = e.steering_vector(model)
            first = len(specs)
            specs += [e._spec(vector), *e._controls(vector)]
            spans.append((first, len(specs)))
        done = steer_many(model, specs)
        return [dataclasses.replace(done[lo], controls=tuple(float(c.delta[0])
                                                             for c in done[lo + 1:hi]))
                if hi - lo > 1 else done[lo] for lo, hi in spans]

    def _beats_controls(self, result: SteeringResult, delta: float) -> list[str]:
        """The claim must beat the controls' 95th percentile (5th, for max_delta)."""
        import numpy as np

        up = self.min_delta is not None
        edge = float(np.percentile(result.controls, 95 if up else 5))
        if (delta > edge) if up else (delta < edge):
            return []
        n, way, pct = len(result.controls), "up" if up else "down", "95th" if up else "5th"
        return [f"coef {self.coefs[0]:g} moves the metric by {delta:+.3f}, but {n} random "
                f"vectors of the same norm move it {way} to {edge:+.3f} ({pct} percentile): "
                f"{abs(delta - edge):.3f} short of beating the controls"]

    def value_name(self) -> str | None:
        single = len(self.coefs) == 1 and self.generation_contains is None \
            and (self.min_delta is not None or self.max_delta is not None)
        return "delta" if single else None

    def value(self, result: SteeringResult) -> float:
        return float(result.delta[result.index(self.coefs[0])])

    def judge(self, result: SteeringResult) -> str | None:
        problems, failing = [], []
        delta = result.delta
        what = (f"{result.measure} of {self.target!r}" if result.measure is not None
                else f"{self.target!r} - {self.foil!r} logit diff" if self.foil is not None
                else f"log P({self.target!r})")
        for coef in self.coefs:
            i = result.index(coef)
            bad = []
            if self.min_delta is not None and delta[i] < self.min_delta:
                bad.append(f"coef {coef:g} moves the {what} by {delta[i]:+.3f}, expected "
                           f"min_delta={self.min_delta}")
            if self.max_delta is not None and delta[i] > self.max_delta:
                bad.append(f"coef {coef:g} moves the {what} by {delta[i]:+.3f}, expected "
                           f"max_delta={self.max_delta}")
            if self.generation_contains is not None:
                text = result.text(coef)
                if not any(w in text for w in self.generation_contains):
                    wanted = " or ".join(repr(w) for w in self.generation_contains)
                    bad.append(f"the coef {coef:g} generation {text!r} does not contain {wanted}")
            if bad:
                failing.append(i)
                problems.extend(bad)
        if not problems and result.controls:
            problems += self._beats_controls(result, delta[result.index(self.coefs[0])])
        if not problems:
            return None
        head = "\n".join(f"steering: {p}" for p in problems)
        return f"{head}\n{result.table(failing)}"


class SteeringCodec(SnapshotCodec[SteeringResult]):
    """One row per coefficient: metric value, KL, top-5 and the generation."""

    kind = "steering"
    meta_schema = schema(prompt=is_str, layer=is_int, site=is_str, target=is_opt_str,
                   foil=is_opt_str, baseline=is_number, baseline_top=is_top,
                   baseline_text=is_opt_str)
    row_schema = schema(coef=lambda x: is_number(x) and x is not None, value=is_number,
                  kl=is_number, top=is_top)
    optional_row = schema(text=is_opt_str, steps=is_steps)
    identity = ("prompt", "layer", "site", "positions", "target", "foil", "metric")
    optional_meta = schema(metric=is_str)  # stored when metric= was given
    row_keys = ("coef",)
    units = MappingProxyType({"value": "logit", "kl": "logit", "top": "top", "steps": "steps"})
    meta_units = MappingProxyType({"baseline": "logit", "baseline_top": "top",
                                   "baseline_steps": "steps"})

    def summarize(self, result: SteeringResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "prompt": result.prompt, "layer": result.layer,
                "site": result.site, "positions": result.positions, "target": result.target,
                "foil": result.foil, "baseline": rounded(result.baseline),
                "baseline_top": [[t, rounded(p)] for t, p in result.baseline_top],
                "baseline_text": result.baseline_text}
        if result.measure is not None:
            meta["metric"] = result.measure
        steps = _steps(result)
        if steps:
            meta["baseline_steps"] = steps[0]
        rows = [{"coef": coef,
                 "value": None if result.values is None else rounded(result.values[i]),
                 "kl": rounded(result.kl[i]),
                 "top": [[t, rounded(p)] for t, p in result.steered_top[i]]}
                | ({"text": result.texts[i]} if result.texts is not None else {})
                | ({"steps": steps[i + 1]} if steps else {})
                for i, coef in enumerate(result.coefs)]
        return meta, rows

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes = []
        if size := number_change(old["baseline"], new["baseline"],
                                 tol.at(old, "baseline", "logit")):
            changes.append(Change(size, f"baseline {fmt(old['baseline'], '.3f')} -> "
                                        f"{fmt(new['baseline'], '.3f')}"))
        changes += top_changes("baseline", old["baseline_top"], new["baseline_top"],
                               tol.at(old, "baseline_top", "top"))
        changes += text_change("baseline generation", old.get("baseline_text"),
                               new.get("baseline_text"), old.get("baseline_steps"),
                               new.get("baseline_steps"), tol.at(old, "baseline_steps", "steps"))
        for o, n in zip(old_rows, new_rows, strict=True):
            where = f"coef {o['coef']:g}"
            for name in ("value", "kl"):
                if size := number_change(o[name], n[name], tol.at(o, name, "logit")):
                    changes.append(Change(size, f"{where}: {name} {fmt(o[name])} -> "
                                                f"{fmt(n[name])}"))
            changes += top_changes(where, o["top"], n["top"], tol.at(o, "top", "top"))
            changes += text_change(f"{where}: generation", o.get("text"), n.get("text"),
                                   o.get("steps"), n.get("steps"), tol.at(o, "steps", "steps"))
        return changes


def _steps(result: SteeringResult) -> list[Steps]:
    """The greedy generations' steps, baseline first (none for sampled generations)."""
    if result.sampled or result.tokens is None or result.margins is None:
        return []
    return [steps_of(t, m) for t, m in zip(result.tokens, result.margins, strict=True)]


def steering_figure(result: SteeringResult) -> str:
    """Bars of the metric's change per coefficient, and the generations."""
    title = f"steering at {result.site}@{result.layer} on {result.prompt!r}"
    parts = [f"<h4>{esc(title)}</h4>"]
    if result.values is not None:
        delta = result.delta
        scale = max(float(np.abs(delta).max()), 1e-9)
        width, bar_h, mid = 420, 18, 210
        height = bar_h * len(delta) + 8
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" '
               f'height="{height}" font-family="monospace" font-size="10">'
               f"<title>{esc(result.metric)} change per coefficient</title>"
               f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#888"/>']
        for i, (coef, d) in enumerate(zip(result.coefs, delta, strict=True)):
            w = abs(d) / scale * (mid - 60)
            x = mid if d >= 0 else mid - w
            y = 4 + i * bar_h
            svg.append(f'<rect x="{x}" y="{y}" width="{max(w, 1)}" height="{bar_h - 4}" '
                       f'fill="{"#4a7bd0" if d >= 0 else "#d05a4a"}"/>'
                       f'<text x="4" y="{y + 11}">coef {coef:g}</text>'
                       f'<text x="{width - 4}" y="{y + 11}" text-anchor="end">{d:+.3f}</text>')
        svg.append("</svg>")
        parts.append("".join(svg))
    if result.texts is not None:
        rows = "".join(f"<tr><td>{c:g}</td><td><code>{esc(repr(t))}</code></td></tr>"
                       for c, t in zip(result.coefs, result.texts, strict=True))
        parts.append(f"<table class='ps'><tr><th>coef</th><th>generation</th></tr>"
                     f"<tr><td>baseline</td><td><code>{esc(repr(result.baseline_text))}</code>"
                     f"</td></tr>{rows}</table>")
    return "".join(parts)


KIND = ExpectationKind(
    name="steering", expectation=SteeringExpectation, result=SteeringResult,
    help="assert what a steering vector does: positive - negative activations (or "
         "vector=FILE) added coef times at layer moves target - foil by min/max_delta, or "
         "steers generation.",
    codec=SteeringCodec(), figure=steering_figure,
    example=(("The cat sat on the",), {"positive": "I love", "negative": "I hate", "layer": 1,
                                       "coef": [0, 2], "target": " mat", "max_delta": 100}),
)
