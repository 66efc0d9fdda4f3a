"""expect layer: any expectation kind over a prompt dataset: per-prompt values, a statistic with its
interval, and a three-valued verdict.

A marker given ``prompts=`` becomes a ``DatasetExpectation``: the marker's other arguments
are shared by every row, each row adds its own (``prompt``, ``answer``...), and each row is
the kind's own single-prompt expectation, built and checked as one. ``stat="mean"`` or
``"median"`` holds the statistic of the kind's per-prompt ``value`` to the marker's bounds
(``min``/``max``, ``min_recovery``...); ``stat="fraction"`` holds the share of rows that pass
the kind's own check to ``min_fraction``. Kinds without a per-prompt number take
``stat="fraction"`` only. Rows run through the kind's ``run_many`` (batched where the kind
can), and the verdict is PASS, FAIL or INCONCLUSIVE (see ``pytest_interp.stats``).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checks
from .datasets import GENERATORS, Row, load, role_position
from .errors import InterpError
from .expectation import DATASET_ARGS, Expectation, ExpectationKind, Inconclusive, Marker
from .record import recording
from .registry import KINDS
from .stats import INTERVALS, STATS, Estimate, Verdict, estimate, verdict

if TYPE_CHECKING:
    from .model import InterpModel

SHOWN = 10  # per-prompt rows a failure lists (all of them with -vv)


@dataclass(frozen=True, eq=False)
class DatasetResult:
    """Per-prompt results and values of one expectation over a dataset, and the verdict."""

    kind: str
    source: str
    value_name: str
    rows: tuple[Row, ...]
    results: tuple[Any, ...]
    values: tuple[float, ...]
    failures: tuple[str | None, ...]  # each row's own judgement (None: the row passes)
    estimate: Estimate
    low: float | None
    high: float | None
    bound_names: tuple[str, str]
    verdict: Verdict
    skipped: tuple[int, ...] = ()  # rows with no effect to divide by: left out of the statistic
    effect: Estimate | None = None  # the mean |effect| a ratio-valued claim divides by
    effect_floor: float = 0.0  # the least effect it needs (min_effect=)

    @property
    def no_effect(self) -> bool:
        """Whether the dataset as a whole shows too little effect to divide by."""
        return self.effect is not None and (self.effect.low < self.effect_floor
                                            or len(self.skipped) == len(self.rows))

    @property
    def bound_text(self) -> str:
        parts = [f"{name}={value}" for name, value in zip(self.bound_names, (self.low, self.high),
                                                          strict=True) if value is not None]
        return " and ".join(parts)


@dataclass(frozen=True, eq=False)
class DatasetExpectation(Expectation[DatasetResult]):
    """A kind's expectation on each row of a dataset, judged by a statistic's interval."""

    kind: str
    source: str
    rows: tuple[Expectation[Any], ...]
    data: tuple[Row, ...]
    stat: str = "mean"
    confidence: float = 0.95
    min_fraction: float | None = None
    interval: str = "percentile"
    shown: int | None = SHOWN

    @classmethod
    def parse(cls, marker: Marker, args: tuple[Any, ...], kwargs: dict[str, Any],
              root: Path) -> DatasetExpectation:
        """The dataset expectation a marker with ``prompts=`` declares (static checks)."""
        options = {k: kwargs.pop(k, v) for k, v in DATASET_ARGS.items()}
        stat = checks.choice("stat", options["stat"], STATS)
        confidence, min_fraction = options["confidence"], options["min_fraction"]
        checks.number("confidence", confidence)
        if confidence is None or not 0 < confidence < 1:
            raise InterpError(f"confidence must be between 0 and 1, got {confidence!r}")
        interval = checks.choice("interval", options["interval"], INTERVALS)
        checks.number("min_fraction", min_fraction)
        if stat == "fraction" and (min_fraction is None or not 0 <= min_fraction <= 1):
            raise InterpError("stat='fraction' needs min_fraction= between 0 and 1: the share "
                              "of prompts that must pass")
        if stat != "fraction" and min_fraction is not None:
            raise InterpError(f"min_fraction= applies to stat='fraction', not stat={stat!r}")
        shared = _bind_partial(marker, args, kwargs)
        target: type[Expectation[Any]] = marker.target
        params = marker.parameters
        required = [p.name for p in marker.signature.parameters.values()
                    if p.default is p.empty]
        source = options["prompts"]
        data = load(source, root, target.row_fields)
        rows = []
        for i, row in enumerate(data):
            given = {k: v for k, v in row.items() if k in params}
            both = sorted(set(given) & set(shared))
            if both:
                raise InterpError(f"{', '.join(both)} given by both the marker and prompts "
                                  f"row {i}: drop one")
            missing = [p for p in required if p not in given and p not in shared]
            if missing:
                name, unused = missing[0], [k for k in row if k not in params]
                other = _renamed(name, unused)
                raise InterpError(
                    f"prompts row {i} ({_label(row)}) has no {name!r}" + (
                        f" (it has {other!r}: rename the key to {name!r}, or pass {name}= in "
                        "the marker)" if other else ": give it in every row or once in the marker"))
            try:
                rows.append(target(**{**shared, **given}).with_root(root))
            except (InterpError, TypeError) as exc:
                raise InterpError(f"prompts row {i} ({_label(row)}): {_one_line(exc)}") from None
        if stat != "fraction" and rows[0].value_name() is None:
            raise InterpError(f"stat={stat!r} needs a per-prompt number, which this marker "
                              "does not give: use stat='fraction' with min_fraction=")
        return cls(kind=marker.name, source=_describe(source, len(rows)), rows=tuple(rows),
                   data=tuple(data), stat=stat, confidence=confidence, min_fraction=min_fraction,
                   interval=interval)

    def label(self, skip: Collection[str] = ()) -> str:
        """The rows' shared label (the fields that differ between rows left out)."""
        first = self.rows[0]
        varying = [name for name in first.label_fields
                   if len({repr(getattr(row, name, None)) for row in self.rows}) > 1]
        return first.label(skip=(*skip, *varying))

    def validate(self, model: InterpModel) -> None:
        resolved = []
        for i, (row, data) in enumerate(zip(self.rows, self.data, strict=True)):
            try:
                row = _with_roles(model, row, data)
                row.validate(model)
            except InterpError as exc:
                raise InterpError(f"prompts row {i} ({_label(data)}): {exc}") from None
            resolved.append(row)
        object.__setattr__(self, "rows", tuple(resolved))

    def run(self, model: InterpModel) -> DatasetResult:
        def compute(m: InterpModel) -> tuple[Any, ...]:
            return tuple(type(self.rows[0]).run_many(m, self.rows))

        with recording():  # the rows' own results stay out of the report
            results = model.remember(_run_key(self.rows), compute)
        pairs = list(zip(self.rows, results, strict=True))
        failures = tuple(row.judge(r) for row, r in pairs)
        skipped = tuple(i for i, (row, r) in enumerate(pairs) if row.no_effect(r) is not None)
        if self.stat == "fraction":
            values = tuple(float(f is None) for f in failures)
            low, high, bounds = self.min_fraction, None, ("min_fraction", "")
            name = "passes"
        else:
            values = tuple(math.nan if i in skipped else row.value(r)
                           for i, (row, r) in enumerate(pairs))
            low, high = self.rows[0].bounds()
            bounds = self.rows[0].bound_fields
            name = self.rows[0].value_name() or "value"
        seed = zlib.crc32(f"{self.kind} {self.source}".encode())

        def statistic(data: list[float], stat: str) -> Estimate:
            if not data:
                return Estimate(stat, math.nan, math.nan, math.nan, 0, self.confidence, "no rows")
            return estimate(data, stat, confidence=self.confidence, interval=self.interval,
                            seed=seed)

        effects = [row.effect(r) for row, r in pairs]
        effect = statistic([abs(e) for e in effects if e is not None], "mean") \
            if all(e is not None for e in effects) else None
        kept = [v for i, v in enumerate(values) if i not in skipped]
        est = statistic(kept, self.stat)
        result = DatasetResult(
            kind=self.kind, source=self.source, value_name=name, rows=self.data,
            results=tuple(results), values=values, failures=failures, estimate=est, low=low,
            high=high, bound_names=bounds, verdict=verdict(est, low, high) if kept
            else Verdict.INCONCLUSIVE, skipped=skipped, effect=effect,
            effect_floor=self.rows[0].effect_floor)
        if result.no_effect:
            return dataclasses.replace(result, verdict=Verdict.INCONCLUSIVE)
        return result

    def measured(self, result: DatasetResult) -> str:
        est = result.estimate
        what = "fraction passing" if self.stat == "fraction" else \
            f"{self.stat} {result.value_name}"
        return (f"{what} {est.value:.4g}, {est.confidence:.0%} CI [{est.low:.4g}, "
                f"{est.high:.4g}], n={est.n}")

    def point(self, result: DatasetResult) -> dict[str, Any]:
        est = result.estimate
        name = "fraction passing" if self.stat == "fraction" else \
            f"{self.stat} {result.value_name}"
        return {"name": name, "value": est.value, "low": result.low, "high": result.high,
                "interval": [est.low, est.high]}

    def judge(self, result: DatasetResult) -> str | None:
        if result.no_effect:
            assert result.effect is not None
            eff = result.effect
            return Inconclusive(
                f"{self.kind} over {result.source}: no effect to divide by: the mean "
                f"{self.rows[0].effect_name} is {eff.value:.3f}, {eff.confidence:.0%} CI "
                f"[{eff.low:.3f}, {eff.high:.3f}] (n={eff.n}), below min_effect="
                f"{result.effect_floor:g} ({len(result.skipped)} of {len(result.rows)} rows "
                "below it): INCONCLUSIVE; pick prompts on which the model behaves "
                f"differently, or lower min_effect=\n{table(result, self.shown)}")
        kept = [r for i, r in enumerate(result.results) if i not in result.skipped]
        if result.verdict is Verdict.PASS:
            extra = self.rows[0].judge_rows(kept)
            return None if extra is None else \
                f"{self.kind} over {result.source}: {extra}\n{table(result, self.shown)}"
        est = result.estimate
        what = "fraction of prompts passing" if self.stat == "fraction" else \
            f"{self.stat} {result.value_name}"
        head = (f"{self.kind} over {result.source}: {what} is {est.value:.3f}, "
                f"{est.confidence:.0%} CI [{est.low:.3f}, {est.high:.3f}] ({est.method}, "
                f"n={est.n}), expected {result.bound_text}")
        if result.skipped:
            head += (f" ({len(result.skipped)} of {len(result.rows)} rows left out: their "
                     f"{self.rows[0].effect_name} is below min_effect={result.effect_floor:g})")
        if result.verdict is Verdict.FAIL:
            text = f"{head}: the whole interval is on the wrong side"
        else:
            text = f"{head}: INCONCLUSIVE, the interval straddles the bound; add prompts or " \
                   "move the bound"
        text += "\n" + table(result, self.shown)
        return Inconclusive(text) if result.verdict is Verdict.INCONCLUSIVE else text


def table(result: DatasetResult, shown: int | None = SHOWN) -> str:
    """The per-prompt table, worst rows first."""
    n = len(result.values)
    skipped = set(result.skipped)
    if result.estimate.stat == "fraction":
        order = sorted(range(n), key=lambda i: (i in skipped, result.failures[i] is None, i))
    elif result.low is not None:
        order = sorted(range(n), key=lambda i: (i in skipped, result.values[i], i))
    else:
        order = sorted(range(n), key=lambda i: (i in skipped, -result.values[i], i))
    picked = order if shown is None else order[:shown]
    title = "all" if len(picked) == n else f"{len(picked)} of {n}; -vv shows all"
    lines = [f"  per prompt, worst first ({title}):",
             f"    {'row':>4}  {result.value_name:>10}  prompt"]
    for i in picked:
        value = result.values[i]
        note = ""
        if i in skipped:
            shown_value = "no effect"
        elif result.estimate.stat == "fraction":
            failure = result.failures[i]
            shown_value = "fails" if failure is not None else "passes"
            note = f"  {failure.splitlines()[0]}" if failure is not None else ""
        else:
            shown_value = f"{value:.3f}"
        lines.append(f"    {i:>4}  {shown_value:>10}  {_label(result.rows[i])}{note}")
    return "\n".join(lines)


def _bind_partial(marker: Marker, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The marker's own arguments (no defaults applied), checked against its signature."""
    marker.check_keywords(kwargs)
    try:
        bound = marker.signature.bind_partial(*args, **kwargs)
    except TypeError as exc:
        raise InterpError(f"{exc}; usage: {marker.usage}") from None
    return dict(bound.arguments)


def _run_key(rows: tuple[Expectation[Any], ...]) -> tuple[Any, ...] | None:
    """What the rows' results depend on: every field but the bounds and min_effect (which
    only judge), so markers that hold the same dataset to other bounds share one run; None
    if unhashable."""
    key = ("dataset", tuple(
        (type(row), tuple((f.name, getattr(row, f.name))
                          for f in dataclasses.fields(row)  # type: ignore[arg-type]
                          if f.name not in (*row.bound_fields, "min_effect"))) for row in rows))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def _with_roles(model: InterpModel, row: Expectation[Any], data: Row) -> Expectation[Any]:
    """``row`` with positions that name one of the row's roles replaced by the position."""
    roles = data.get("roles") or {}
    fields = {f.name for f in dataclasses.fields(row)}  # type: ignore[arg-type]
    changes = {}
    prompt = next((getattr(row, f) for f in row.row_fields if f in fields), "")

    def resolved(value: object) -> object:
        if not (isinstance(value, str) and value in roles):
            return value
        role = roles[value]
        return role_position(model.tokens(prompt).strs[0], role if isinstance(role, int) else
                             (str(role[0]), int(role[1])), value)

    for name in ("position", "positions"):  # one position, or a tuple of them
        if name in fields:
            value = getattr(row, name)
            new = tuple(map(resolved, value)) if isinstance(value, tuple) else resolved(value)
            if new != value:
                changes[name] = new
    return dataclasses.replace(row, **changes) if changes else row  # type: ignore[type-var]


SYNONYMS = (frozenset({"expect", "target", "answer"}),)
"""Row keys that name the same thing in different markers and datasets (``init --facts``
and the capitals generator write ``target``; ``next_token`` takes ``expect``)."""


def _renamed(name: str, keys: list[str]) -> str | None:
    """The key of ``keys`` that a row probably meant as ``name``: a synonym, else a close
    spelling."""
    synonyms = next((group for group in SYNONYMS if name in group), frozenset())
    found = [key for key in keys if key in synonyms]
    found = found or difflib.get_close_matches(name, keys, n=1, cutoff=0.75)
    return found[0] if found else None


def _label(row: Row) -> str:
    text = next((v for k, v in row.items() if k in ("prompt", "clean", "source", "text")
                 and isinstance(v, str)), None)
    text = text if text is not None else next(iter(row.values()), "")
    short = text if len(text) <= 60 else f"{text[:22]}...{text[-35:]}"  # the end matters
    return repr(short)


def _describe(source: object, n: int) -> str:
    if isinstance(source, str) and source.partition(":")[0] in GENERATORS:
        return source if ":" in source else f"{source}:{n}"
    if isinstance(source, str | Path):
        return f"{Path(source).name} ({n} prompts)"
    return f"{n} prompts"


def _one_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__




def parse_marker(kind: ExpectationKind[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                 root: Path) -> Expectation[Any]:
    """The expectation a kind's marker declares (static checks, files rooted at ``root``):
    the kind's own, or with ``prompts=`` a DatasetExpectation over its rows."""
    if "prompts" in kwargs:
        return DatasetExpectation.parse(kind.marker, args, dict(kwargs), root)
    return kind.parse(args, kwargs, root)


def dataset(model: InterpModel, kind: str, prompts: object, /, *args: Any,
            root: str | Path = ".", **kwargs: Any) -> DatasetResult:
    """``@pytest.mark.<kind>(*args, prompts=prompts, **kwargs)`` checked on ``model`` as the
    marker would be: the per-prompt results and values, the ``estimate`` with its interval
    and the ``verdict``. Files are taken from ``root``."""
    return datasets(model, kind, prompts, [{}], *args, root=root, **kwargs)[0]


def datasets(model: InterpModel, kind: str, prompts: object, variants: Sequence[dict[str, Any]],
             /, *args: Any, root: str | Path = ".", **kwargs: Any) -> list[DatasetResult]:
    """``dataset`` for each of ``variants`` (keyword arguments over ``kwargs``: a sweep), the
    rows of all of them run by one ``run_many``, so a kind that batches shares its forward
    passes across the sweep (each dataset's results are then memoised under its own rows)."""
    if kind not in KINDS:
        raise InterpError(f"no expectation kind {kind!r}: use one of "
                          f"{', '.join(KINDS.names())}")
    parsed = [DatasetExpectation.parse(KINDS[kind].marker, args, {
        **kwargs, **variant, "prompts": prompts}, Path(root)) for variant in variants]
    keyed = []
    for expectation in parsed:
        expectation.validate(model)
        if (key := _run_key(expectation.rows)) is not None:  # else run by check alone
            keyed.append((expectation, key))
    rows = [row for expectation, _ in keyed for row in expectation.rows]
    with recording():
        done = iter(type(rows[0]).run_many(model, rows) if rows else ())
        for expectation, key in keyed:
            results = tuple(next(done) for _ in expectation.rows)
            model.memo.result(key, lambda results=results: results)  # type: ignore[misc]
    return [KINDS[kind].check(model, expectation)[0] for expectation in parsed]
