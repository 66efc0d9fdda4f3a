"""kinds layer: ``@pytest.mark.ablation``: parts of the model are necessary, or sufficient, and more
so than random parts like them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .. import checks, metrics
from ..codec import (
    Change,
    SnapshotCodec,
    Tolerances,
    fmt,
    is_number,
    is_opt_str,
    is_str,
    number_change,
    rounded,
    schema,
)
from ..datasets import GENERATORS, load
from ..errors import InterpError, SiteError
from ..expectation import Expectation, ExpectationKind
from ..metrics import Metric
from ..report.draw import esc, strip_svg
from ..results import AblationResult, beaten
from ..sites import Part, parse_part

if TYPE_CHECKING:
    from ..model import InterpModel

METHODS = ("zero", "mean", "resample")


@dataclass(frozen=True)
class AblationExpectation(Expectation[AblationResult]):
    """Ablating the parts in ``ablate`` drops the metric by ``min_drop``/``max_drop``
    (necessity), or ablating every part but those in ``keep`` leaves ``min_faithfulness`` of
    it (sufficiency); with ``control=N``, the set must also beat ``percentile`` % of N random
    sets of as many heads/layers. With ``sae=`` a dictionary, ``ablate`` names its latents
    (zero or mean ablation through its decoder; random sets drawn from the active latents)."""

    prompt: str
    _: KW_ONLY
    answer: str
    foil: str | None = None
    ablate: tuple[Any, ...] | None = None
    keep: tuple[Any, ...] | None = None
    method: str = "mean"
    corrupted: str | None = None
    reference: str | tuple[str, ...] | None = None  # a generator's name reads as its prompts
    positions: tuple[int | str, ...] | None = None
    metric: Metric | None = None
    min_drop: float | None = None
    max_drop: float | None = None
    min_faithfulness: float | None = None
    max_faithfulness: float | None = None
    control: int = 0
    percentile: float = 95.0
    seed: int = 0
    min_effect: float | None = None
    sae: str | None = None

    effect_name = "|clean| metric"
    row_fields = ("prompt", "answer", "foil")
    label_fields = ("ablate", "keep", "method", "metric")

    def __post_init__(self) -> None:
        checks.text("prompt", self.prompt)
        checks.text("answer", self.answer)
        if self.foil is not None:
            checks.text("foil", self.foil)
        if (self.ablate is None) == (self.keep is None):
            raise InterpError("pass ablate=[parts] (they are necessary) or keep=[parts] (they "
                              "are sufficient), one of them")
        given = self.ablate if self.ablate is not None else self.keep
        name = "ablate" if self.ablate is not None else "keep"
        if self.sae is not None:
            self._check_latents(given, name)
        else:
            if isinstance(given, str) or not isinstance(given, list | tuple) or not given:
                raise InterpError(f"{name} must be a non-empty list of parts like ['L9H6', "
                                  f"'L9.attn', 'L9.mlp'], got {given!r}")
            try:
                parts = tuple(sorted({parse_part(p) for p in given}))
            except SiteError as exc:
                raise InterpError(f"{name}: {exc}") from None
            object.__setattr__(self, name, tuple(str(p) for p in parts))
        checks.choice("method", self.method, METHODS)
        if self.method == "resample" and self.corrupted is None:
            raise InterpError("method='resample' takes each part's value from corrupted=: pass "
                              "a corrupted prompt of the same length")
        if self.corrupted is not None:
            checks.text("corrupted", self.corrupted)
        if self.reference is not None:
            if self.method != "mean":
                raise InterpError(f"reference= is what mean ablation averages over, but "
                                  f"method={self.method!r}")
            object.__setattr__(self, "reference", _reference(self.reference))
        if self.positions is not None:
            positions = (self.positions,) if isinstance(self.positions, int | str) \
                else self.positions
            if not isinstance(positions, list | tuple) or not positions or not all(
                    isinstance(p, int | str) and not isinstance(p, bool) for p in positions):
                raise InterpError(f"positions must be a list of ints, tokens or role names, "
                                  f"got {self.positions!r}")
            object.__setattr__(self, "positions", tuple(positions))
        metric = self.metric if self.metric is not None else self.default_metric
        metrics.check(metric, self.foil)
        checks.bounds("min_drop", self.min_drop, "max_drop", self.max_drop)
        checks.bounds("min_faithfulness", self.min_faithfulness, "max_faithfulness",
                      self.max_faithfulness)
        wrong = ("min_faithfulness", "max_faithfulness") if self.ablate is not None \
            else ("min_drop", "max_drop")
        for bound in wrong:
            if getattr(self, bound) is not None:
                right = "keep" if self.ablate is not None else "ablate"
                raise InterpError(f"{bound}= applies to {right}=, not {name}=: use "
                                  f"{' or '.join(self.bound_fields)}")
        low, high = self.bounds()
        if low is None and high is None:
            raise InterpError(f"no check given: pass {' and/or '.join(self.bound_fields)}")
        checks.number("min_effect", self.min_effect)
        if self.min_effect is not None and self.min_effect < 0:
            raise InterpError(f"min_effect is the least |clean| metric faithfulness divides by, "
                              f">= 0, got {self.min_effect!r}")
        checks.required_int("control", self.control, minimum=0)
        checks.required_int("seed", self.seed)
        checks.number("percentile", self.percentile)
        if self.percentile is None or not 0 < self.percentile < 100:
            raise InterpError(f"percentile must be between 0 and 100, got {self.percentile!r}")
        if self.control and low is None:
            raise InterpError(f"control=N checks that the set beats random sets: pass "
                              f"{self.bound_fields[0]}=")

    def _check_latents(self, given: object, name: str) -> None:
        """With ``sae=``: ablate= names latents; keep= and resample ablation do not apply."""
        checks.text("sae", self.sae)
        if name == "keep":
            raise InterpError("keep= with sae= would ablate every other latent: name the "
                              "latents to ablate with ablate=[...]")
        if self.method == "resample":
            raise InterpError("a latent is ablated to zero or its mean: method='zero' or "
                              "'mean', not 'resample'")
        if isinstance(given, str) or not isinstance(given, list | tuple) or not given or \
                not all(checks.is_int(i) and i >= 0 for i in given):
            raise InterpError(f"with sae=, ablate must be a non-empty list of latent numbers "
                              f"like [541, 1749], got {given!r}")
        object.__setattr__(self, "ablate", tuple(sorted({int(i) for i in given})))

    @property
    def bound_fields(self) -> tuple[str, str]:  # type: ignore[override]
        return ("min_drop", "max_drop") if self.ablate is not None else \
            ("min_faithfulness", "max_faithfulness")

    @property
    def default_metric(self) -> str:
        return "logit_diff" if self.foil is not None else "logprob"

    @property
    def parts(self) -> tuple[Part, ...]:
        given = self.ablate if self.ablate is not None else self.keep
        assert given is not None
        return tuple(parse_part(p) for p in given)

    def validate(self, model: InterpModel) -> None:
        from ..probes.ablation import resolve

        model.tokens(self.prompt)
        model.vocab.id(self.answer)
        if self.foil is not None:
            model.vocab.id(self.foil)
        if self.sae is not None:
            dictionary = model.dictionary(self.sae)
            for latent in self.ablate or ():
                dictionary.check_latent(latent)
            return
        for part in self.parts:
            resolve(part, model.info)
        if self.corrupted is not None and self.method == "resample":
            from ..probes.batching import paired_tokens

            paired_tokens(model, self.prompt, self.corrupted)

    def run(self, model: InterpModel) -> AblationResult:
        return self.run_many(model, [self])[0]

    @classmethod
    def run_many(cls, model: InterpModel,
                 expectations: Sequence[AblationExpectation]) -> list[AblationResult]:
        """Rows sharing the marker's arguments run as one batch (a dataset's rows do)."""
        from ..probes.ablation import Ablation

        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, e in enumerate(expectations):
            groups.setdefault(e._shared_key(), []).append(i)
        out: list[AblationResult | None] = [None] * len(expectations)
        for indices in groups.values():
            rows = [expectations[i] for i in indices]
            first = rows[0]
            if first.sae is not None:
                results = model.latent_ablation_rows(first._latent_spec(rows))
                for i, result in zip(indices, results, strict=True):
                    out[i] = result
                continue
            results = model.ablation_rows(Ablation(
                tuple(e._case() for e in rows), first.parts, keep=first.keep is not None,
                method=first.method,  # type: ignore[arg-type]
                metric=first._metric, reference=_reference(first.reference)
                if first.reference is not None else None, control=first.control,
                seed=first.seed))
            for i, result in zip(indices, results, strict=True):
                out[i] = result
        return [r for r in out if r is not None]

    def _latent_spec(self, rows: Sequence[AblationExpectation]) -> Any:
        from ..probes.features import LatentAblation

        return LatentAblation(
            tuple(e._case() for e in rows), str(self.sae), tuple(self.ablate or ()),
            method=self.method, metric=self._metric, reference=_reference(self.reference)
            if self.reference is not None else None, control=self.control, seed=self.seed)

    @property
    def _metric(self) -> Metric:
        return self.metric if self.metric is not None else self.default_metric

    def _shared_key(self) -> tuple[Any, ...]:
        return (self.ablate, self.keep, self.method, self.reference, self._metric,
                self.control, self.seed, self.sae)

    def _case(self) -> Any:
        from ..probes.ablation import Case

        return Case(self.prompt, self.answer, self.foil, self.corrupted, self.positions)

    def value_name(self) -> str:
        return "drop" if self.ablate is not None else "faithfulness"

    def value(self, result: AblationResult) -> float:
        return result.value

    def effect(self, result: AblationResult) -> float | None:
        """Faithfulness (ablated / clean) divides by the clean metric; a drop by nothing."""
        return result.clean if self.keep is not None else None

    @property
    def effect_floor(self) -> float:
        return metrics.min_effect(self._metric, self.min_effect)

    def effect_text(self, result: AblationResult, effect: float) -> str:
        return (f"ablation: no effect to keep: the clean {result.measured} on {self.prompt!r} "
                f"is {effect:+.3f}, below min_effect={self.effect_floor:g}; faithfulness "
                "(ablated / clean) would divide by it: pick prompts on which the model shows "
                "the behaviour, or lower min_effect=")

    def judge(self, result: AblationResult) -> str | None:
        none = self.no_effect(result)
        if none is not None:
            return none
        low, high = self.bounds()
        value = result.value
        problems = checks.outside(value, low, high, self.bound_fields)
        lead = (f"ablation: {result.described} on {self.prompt!r}: the {result.measured} goes "
                f"from {result.clean:+.3f} to {result.ablated:+.3f}, a {result.value_name} of "
                f"{value:.3f}")
        if problems:
            return f"{lead}, {' and '.join(problems)}"
        if self.control and result.controls:
            return self._against_controls(lead, value, result.control_values, result)
        return None

    def judge_rows(self, results: Sequence[AblationResult]) -> str | None:
        """Over a dataset: the set's mean value must beat the random sets' mean values."""
        if not self.control or not results:
            return None
        import numpy as np

        mean = float(np.mean([r.value for r in results]))
        controls = np.mean([r.control_values for r in results], axis=0)
        first = results[0]
        lead = (f"{first.described}: the mean {first.value_name} of the {first.metric} over "
                f"{len(results)} prompts is {mean:.3f}")
        return self._against_controls(lead, mean, controls, first)

    def _against_controls(self, lead: str, value: float, controls: Any,
                          result: AblationResult) -> str | None:
        import numpy as np

        share = beaten(value, controls)
        if share * 100 >= self.percentile:
            return None
        edge = float(np.percentile(controls, self.percentile))
        kinds = _count(result.parts)
        return (f"{lead}, which beats {share:.0%} of {len(controls)} random sets of {kinds} "
                f"(ranks {_rank(value, controls)} of {len(controls) + 1}), expected to beat "
                f"{self.percentile:g}% (percentile={self.percentile:g}): their "
                f"{self.percentile:g}th percentile is {edge:.3f}")


def _count(parts: Sequence[str]) -> str:
    """``2 heads and 1 MLP`` (``3 latents``) for a set's parts."""
    if parts and all(p.startswith("latent ") for p in parts):
        return f"{len(parts)} latent{'s' if len(parts) != 1 else ''} (active on the prompts)"
    kinds = [parse_part(p).kind for p in parts]
    words = {"head": ("head", "heads"), "attn": ("attention layer", "attention layers"),
             "mlp": ("MLP", "MLPs")}
    out = []
    for kind in ("head", "attn", "mlp"):
        n = kinds.count(kind)
        if n:
            out.append(f"{n} {words[kind][n != 1]}")
    return " and ".join(out)


def _rank(value: float, controls: Any) -> int:
    """1 = the set's value is above every control's."""
    return int((controls > value).sum()) + 1


def _reference(value: object) -> tuple[str, ...]:
    """Reference prompts: a list of strings, or a generator by name (``"ioi:64"``)."""
    if isinstance(value, str):
        if value.partition(":")[0] not in GENERATORS:
            raise InterpError(f"reference must be a list of prompts or a generator like "
                              f"'ioi:64' ({', '.join(GENERATORS)}), got {value!r}")

        rows = load(value, Path("."), ("prompt",))
        return tuple(str(r.get("prompt", r.get("clean", ""))) for r in rows)
    return checks.texts("reference", value)


class AblationCodec(SnapshotCodec[AblationResult]):
    """One row per ablated set: the set itself, then each control set, with the metric."""

    kind = "ablation"
    meta_schema = schema(prompt=is_str, answer=is_str, foil=is_opt_str, method=is_str,
                         mode=is_str, metric=is_str, clean=is_number)
    row_schema = schema(ablated=is_str, value=is_number)
    identity = ("prompt", "answer", "foil", "method", "mode", "metric")
    row_keys = ("ablated",)
    units = MappingProxyType({"value": "logit"})
    meta_units = MappingProxyType({"clean": "logit"})

    def summarize(self, result: AblationResult) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        meta = {"model": result.model, "prompt": result.prompt, "answer": result.answer,
                "foil": result.foil, "method": result.method, "mode": result.mode,
                "metric": result.metric, "clean": rounded(result.clean)}
        rows = [{"ablated": " ".join(result.parts), "value": rounded(result.ablated)}]
        rows += [{"ablated": " ".join(parts), "value": rounded(value)}
                 for parts, value in zip(result.control_sets, result.controls, strict=True)]
        return meta, rows

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        changes = []
        if size := number_change(old["clean"], new["clean"], tol.at(old, "clean", "logit")):
            changes.append(Change(size, f"clean {old['metric']} {fmt(old['clean'])} -> "
                                        f"{fmt(new['clean'])}"))
        for o, n in zip(old_rows, new_rows, strict=True):
            if size := number_change(o["value"], n["value"], tol.at(o, "value", "logit")):
                changes.append(Change(size, f"ablating {o['ablated']}: {old['metric']} "
                                            f"{fmt(o['value'])} -> {fmt(n['value'])}"))
        return changes


def ablation_figure(result: AblationResult) -> str:
    """The set's drop or faithfulness against the random sets' (one dot each)."""
    title = f"{result.described}: {result.value_name} of the {result.measured}"
    if not result.controls:
        return (f"<h4>{esc(title)}</h4><p>clean {result.clean:+.3f}, ablated "
                f"{result.ablated:+.3f}: {result.value_name} {result.value:.3f}</p>")
    controls = [float(v) for v in result.control_values]
    svg = strip_svg(controls, [v < result.value for v in controls], None, None,
                    (result.value, result.value), result.value,
                    f"{title}; dots: {len(controls)} random sets (green: the set beats it)")
    return (f"<h4>{esc(title)}</h4><p>the set (blue line) beats {result.beaten:.0%} of "
            f"{len(controls)} random sets</p>{svg}")


KIND = ExpectationKind(
    name="ablation", expectation=AblationExpectation, result=AblationResult,
    help="assert parts are necessary (ablate=[...], min_drop/max_drop) or sufficient "
         "(keep=[...], min_faithfulness): zero, mean or resample ablation of heads ('L9H6'), "
         "attention layers ('L9.attn') and MLPs ('L9.mlp'), or a dictionary's latents (sae=, "
         "ablate=[541]), optionally beating control=N random sets.",
    codec=AblationCodec(), figure=ablation_figure,
    example=(("The cat sat on the",), {"answer": " mat", "foil": " rug", "ablate": ["L1H0"],
                                       "max_drop": 100}),
)
