"""expectation layer: expectation kinds: one object per kind of claim, holding everything
pytest-interp needs.

A kind is its marker (the expectation dataclass's own signature is the marker's signature, as
pytest binds ``Skip(*mark.args, **mark.kwargs)``), the probe it runs (``Expectation.run``),
its result type, its snapshot codec and its report figure. Kinds are registered once, in
``pytest_interp.registry``; the plugin, snapshots and the report loop over the registry.

An expectation checks itself twice: ``__post_init__`` checks what needs no model (types,
value ranges, combinations) when the marker is read at collection, and ``validate(model)``
checks what needs the model (tokens, layer ranges, lengths) when the test runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from .errors import InterpError
from .record import record

if TYPE_CHECKING:
    from .codec import SnapshotCodec
    from .model import InterpModel

DATASET_ARGS = {"prompts": None, "stat": "mean", "confidence": 0.95, "min_fraction": None,
                "interval": "percentile"}
"""The arguments every marker takes for a dataset, with their defaults."""

R = TypeVar("R")
E = TypeVar("E", bound="Expectation[Any]")


class Inconclusive(str):
    """A judgement that is neither pass nor fail: an interval straddles the bound, or a ratio
    has no effect to divide by."""


@dataclass(frozen=True)
class Drift(Generic[R]):
    """An expectation's result against the baseline model's: the result to show (with the
    comparison in it), trend points (``{"name", "value", "low", "high"}``), one line for
    JUnit XML and the summary, and a failure text (None: within its bounds)."""

    result: R
    points: tuple[dict[str, Any], ...]
    line: str
    failure: str | None = None


class Expectation(Generic[R]):
    """Base of the frozen expectation dataclasses: a claim about a model's result ``R``.

    Subclasses are ``@dataclass(frozen=True)``; their fields are the marker's arguments.
    """

    paths: ClassVar[tuple[str, ...]] = ()
    """Fields naming files; relative paths are taken from the rootdir."""

    row_fields: ClassVar[tuple[str, ...]] = ("prompt",)
    """What a dataset row of a plain string (the first) or a tuple (in order) fills."""

    bound_fields: ClassVar[tuple[str, str]] = ("min", "max")
    """The fields bounding ``value`` (a dataset's mean or median is held to them)."""

    effect_name: ClassVar[str] = "effect"
    """What ``effect`` measures, as failures name it."""

    label_fields: ClassVar[tuple[str, ...]] = ()
    """The fields naming where and what the claim measures (layer, position, head, coef,
    metric...): its ``label`` in trends, CI summaries and JUnit XML."""

    def label(self, skip: Collection[str] = ()) -> str:
        """``layer=20, position=' to'``: the ``label_fields`` not at their defaults (less
        ``skip``), so the markers of one test can be told apart."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        parts = []
        for name in self.label_fields:
            value = getattr(self, name, None)
            if name in skip or value is None or value == defaults.get(name):
                continue
            parts.append(f"{name}={getattr(value, '__name__', None) or value!r}")
        return ", ".join(parts)

    def with_root(self: E, root: Path) -> E:
        """A copy with relative ``paths`` taken from ``root``; then ``check_files``."""
        rooted = {}
        for name in self.paths:
            value = getattr(self, name)
            if isinstance(value, Path):
                value = str(value)
            if isinstance(value, str) and not Path(value).is_absolute():
                rooted[name] = str(root / value)
        out: E = replace(cast(Any, self), **rooted) if rooted else self
        out.check_files()
        return out

    def check_files(self) -> None:
        """Static checks of the files named by ``paths`` (they exist, have the right form)."""

    def validate(self, model: InterpModel) -> None:
        """Checks that need the model (tokens, layer ranges), before ``run``."""

    def run(self, model: InterpModel) -> R:
        """The probe: measure the result this expectation judges (memoised by the model)."""
        raise NotImplementedError

    def judge(self, result: R) -> str | None:
        """The failure text, or None when ``result`` meets the expectation."""
        raise NotImplementedError

    def effect(self, result: R) -> float | None:
        """The effect a ratio-valued claim divides by (clean - corrupted, or clean), or None:
        this claim divides by nothing. Below ``effect_floor`` the claim is INCONCLUSIVE, and
        a dataset leaves the row out of its statistic."""
        return None

    @property
    def effect_floor(self) -> float:
        """The least ``effect`` the claim needs (``min_effect=``, else the metric's)."""
        return 0.0

    def no_effect(self, result: R) -> Inconclusive | None:
        """INCONCLUSIVE when ``effect`` is below ``effect_floor``, naming the effect."""
        effect = self.effect(result)
        if effect is None or (abs(effect) >= self.effect_floor and effect != 0):
            return None
        return Inconclusive(self.effect_text(result, effect))

    def effect_text(self, result: R, effect: float) -> str:
        """Why a ratio has nothing to divide by, and what to do."""
        return (f"no effect to divide by: {effect:+.3f}, below min_effect={self.effect_floor:g}; "
                "pick inputs on which the model behaves differently, or lower min_effect=")

    def drift(self, model: Any, result: R, old: R,
              rows: Sequence[Expectation[R]]) -> Drift[R] | None:
        """This result compared with the same expectation's on the baseline model
        (``--interp-baseline``, ``old``), over ``rows`` (this expectation, or a dataset's):
        None when the kind has no such comparison."""
        return None

    def judge_rows(self, results: Sequence[R]) -> str | None:
        """Over a dataset whose statistic passed: a further check of all rows' results
        together (e.g. against random controls), or None."""
        return None

    def value_name(self) -> str | None:
        """The name of the per-prompt number ``value`` reads, or None: this expectation only
        passes or fails (a dataset of it is judged by the fraction that pass)."""
        return None

    def value(self, result: R) -> float:
        """The per-prompt number a dataset's mean or median is made of."""
        raise NotImplementedError

    def measured(self, result: R) -> str | None:
        """What this expectation measured, as one line for JUnit XML and CI summaries
        (``logit diff 6.120``), or None when it reads no single number."""
        name = self.value_name()
        return None if name is None else f"{name} {self.value(result):.4g}"

    def point(self, result: R) -> dict[str, Any] | None:
        """What this expectation measured as numbers, for the report's trend charts: the
        value's ``name``, ``value`` and bounds ``low``/``high`` (None: unbounded), or None
        when it reads no single number."""
        name = self.value_name()
        if name is None:
            return None
        low, high = self.bounds()
        return {"name": name, "value": float(self.value(result)), "low": low, "high": high}

    def bounds(self) -> tuple[float | None, float | None]:
        """The values of ``bound_fields``: the value's lower and upper bounds."""
        low, high = (getattr(self, name) if name else None for name in self.bound_fields)
        return low, high

    @classmethod
    def run_many(cls, model: InterpModel, expectations: Sequence[Any]) -> list[R]:
        """The results of many expectations of this class (one per dataset row); override
        to batch them."""
        return [e.run(model) for e in expectations]


@dataclass(frozen=True)
class Marker:
    """A marker whose signature is a class's (``target(*mark.args, **mark.kwargs)``)."""

    name: str
    target: type
    help: str
    dataset: bool = False
    """Whether the marker also takes the dataset arguments (``prompts=``, ``stat=``...)."""

    @property
    def usage(self) -> str:
        """``@pytest.mark.name(arg, *, key=default)``, as shown in error messages."""
        return f"@pytest.mark.{self.call}"

    @property
    def call(self) -> str:
        """``name(arg, *, key=default)``, as registered for ``pytest --markers``."""
        params: list[str] = []
        for p in self.signature.parameters.values():
            if p.kind is p.KEYWORD_ONLY and "*" not in params:
                params.append("*")
            params.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        if self.dataset:
            params += [f"{k}={v!r}" for k, v in DATASET_ARGS.items()]
        return f"{self.name}({', '.join(params)})"

    @property
    def signature(self) -> inspect.Signature:
        return inspect.signature(self.target)

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(self.signature.parameters)

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind marker arguments to the signature (defaults applied) or raise InterpError."""
        self.check_keywords(kwargs)
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InterpError(f"{exc}; usage: {self.usage}") from None
        bound.apply_defaults()
        return dict(bound.arguments)

    def check_keywords(self, kwargs: dict[str, Any]) -> None:
        """Every keyword is a parameter, or one line naming the closest one and the usage."""
        known = self.parameters
        if self.dataset:
            known = (*known, *DATASET_ARGS)
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InterpError(f"unknown keyword {key!r}{hint}; usage: {self.usage}")

    def build(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The target built from the marker's arguments (its own checks run)."""
        return self.target(**self.bind(args, kwargs))


@dataclass(frozen=True)
class ExpectationKind(Generic[E, R]):
    """One kind of expectation: marker, probe, result, snapshot codec and report figure.

    ``expectation`` is a frozen dataclass subclassing ``Expectation[R]``; its signature is the
    marker's. ``result`` is the type its ``run`` returns (and that snapshots and figures are
    looked up by). ``codec`` stores results in snapshots (None: results of this kind cannot be
    snapshot). ``figure`` draws a result as HTML for the report (None: no figure).
    ``example`` is one valid marker call (args, kwargs) on the tiny-random test models: the
    fuzz test mutates it.
    """

    name: str
    expectation: type[E]
    result: type[R]
    help: str
    codec: SnapshotCodec[R] | None = None
    figure: Callable[[R], str] | None = None
    example: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise InterpError(f"expectation kind name {self.name!r} is not an identifier")
        if not (isinstance(self.expectation, type) and issubclass(self.expectation, Expectation)
                and hasattr(self.expectation, "__dataclass_fields__")):
            raise InterpError(f"expectation kind {self.name!r}: expectation must be a dataclass "
                              "subclassing pytest_interp.Expectation")
        clash = sorted(set(self.marker.parameters) & set(DATASET_ARGS))
        if clash:
            raise InterpError(f"expectation kind {self.name!r}: fields {', '.join(clash)} are "
                              "reserved for datasets (prompts=, stat=...)")

    @property
    def marker(self) -> Marker:
        return Marker(self.name, self.expectation, self.help, dataset=True)

    def parse(self, args: tuple[Any, ...], kwargs: dict[str, Any],
              root: Path) -> Expectation[Any]:
        """The expectation a marker declares for one prompt, its files rooted at ``root``
        (static checks). ``dataset_expectation.parse_marker`` also takes ``prompts=``."""
        self.marker.check_keywords(kwargs)
        expectation: E = self.marker.build(args, kwargs)
        return expectation.with_root(root)

    def check(self, model: InterpModel, expectation: Expectation[Any]) -> tuple[Any, str | None]:
        """Validate against the model, run the probe, judge: (result, failure text or None)."""
        expectation.validate(model)
        result = record(expectation.run(model))
        return result, expectation.judge(result)
