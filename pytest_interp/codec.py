"""expect layer: snapshot codecs: how one kind of result is stored, checked and compared (no torch).

A stored result is a metadata object and one object per row (a layer, a head, a layer pair,
a coefficient). A kind's codec says what goes in them (``summarize``), what a readable file
holds (``meta_schema``, ``row_schema``), which metadata identifies the measurement
(``identity``), which row fields identify a row (``row_keys``), and how two rows differ in
model terms (``compare_rows``). ``pytest_interp.snapshot`` does the rest for every kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar

from .checks import is_int as is_int  # the one integer check, for schemas

R = TypeVar("R")
Check = Callable[[object], bool]
Schema = Mapping[str, Check]

EXACT = 1e9  # the size of a change in tokens, texts or labels (sorted before number changes)
BEYOND = math.nextafter(1.0, 2.0)  # the least drift of a change beyond the noise floor


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances by unit: probabilities and attention mass (prob), logits, logit
    differences, KL and entropy in nats (logit), patching recovery (recovery)."""

    prob: float = 0.02
    logit: float = 0.1
    recovery: float = 0.05

    def at(self, stored: Mapping[str, Any], key: str, unit: str, index: int | None = None
           ) -> float:
        """The tolerance for ``stored[key]`` (element ``index`` of a list): the configured
        one of its unit, or the snapshot's stored noise floor for it where that is wider."""
        base = float(getattr(self, VALUE_UNITS.get(unit, unit)))
        floors = stored.get("floor")
        floor = floors.get(key) if isinstance(floors, dict) else None
        if isinstance(floor, list):
            values = floor if index is None else floor[index:index + 1]
            floor = max((f for f in values if isinstance(f, int | float)), default=None)
        return max(base, float(floor)) if isinstance(floor, int | float) else base


@dataclass(frozen=True)
class Change:
    """One difference in model terms; ``size`` is |difference| / tolerance, or EXACT.

    ``noise``: a difference the rules call noise (a swap of near-tied tokens, a greedy text
    that parted at a near-tie): shown with --snapshot-details, never a failure.
    ``drift``: how many noise floors the model moved where ``size`` is EXACT only to list a
    token, text or label change first (None: ``size``). A change of the measurement itself
    (another prompt, tokenizer or row shape) stays EXACT: no drift budget covers it."""

    size: float
    text: str
    noise: bool = False
    drift: float | None = None

    @property
    def floors(self) -> float:
        """The change in noise floors, as drift budgets count it."""
        return self.size if self.drift is None else self.drift


class SnapshotFormatError(ValueError):
    """A stored snapshot that is not a readable pytest-interp snapshot, at ``line`` (1 is
    the header line)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line, self.problem = line, problem


class SnapshotCodec(Generic[R]):
    """Stored form and comparison of one kind of result. Subclass per kind."""

    kind: ClassVar[str]
    """The name stored on the header and metadata lines."""
    meta_schema: ClassVar[Schema] = MappingProxyType({})
    """Metadata key -> check of its stored value ("kind" and "model" are checked for all)."""
    row_schema: ClassVar[Schema] = MappingProxyType({})
    """Row key -> check; every row has these keys."""
    optional_row: ClassVar[Schema] = MappingProxyType({})
    """Row key -> check, for keys some rows have."""
    optional_meta: ClassVar[Schema] = MappingProxyType({})
    """Metadata key -> check, for keys some snapshots have."""
    identity: ClassVar[tuple[str, ...]] = ()
    """Metadata keys that must be equal for two results to be the same measurement."""
    units: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """Row key -> the unit of its numbers (prob, logit or recovery): what noise floors are
    measured for. Numbers, lists of numbers, top-k lists and greedy steps."""
    meta_units: ClassVar[Mapping[str, str]] = MappingProxyType({})
    """The same for metadata keys."""
    row_keys: ClassVar[tuple[str, ...]] = ()
    """Row fields naming what a row measures; rows compare pairwise only when these agree."""

    def summarize(self, result: R) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """(metadata starting with "model", rows): what snapshots store and compare."""
        raise NotImplementedError

    def check_rows(self, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Raise SnapshotFormatError at the first row that does not fit the schema."""
        for number, row in enumerate(rows, 3):
            check_object(number, row, self.row_schema, self.optional_row)

    def row_shape(self, row: dict[str, Any]) -> str:
        """What a row measures, e.g. ``layer 3, position 5``."""
        return ", ".join(f"{k} {row[k]}" for k in self.row_keys)

    def compare_rows(self, old: dict[str, Any], new: dict[str, Any], old_rows: list[dict],
                     new_rows: list[dict], tol: Tolerances) -> list[Change]:
        """Every change beyond tolerance, for results of equal identity and row shapes."""
        raise NotImplementedError


# ---------------------------------------------------------------------------
# Schema checks for stored values


def schema(**checks: Check) -> Schema:
    """A read-only key -> check table: ``schema(layer=is_int, top=is_top)``."""
    return MappingProxyType(checks)


def is_str(x: object) -> bool:
    return isinstance(x, str)


def is_number(x: object) -> bool:
    """A finite number, or None (what NaN is stored as)."""
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool)
                         and math.isfinite(x))


def is_opt_str(x: object) -> bool:
    return x is None or isinstance(x, str)


def is_strs(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(t, str) for t in x)


def is_numbers(x: object) -> bool:
    return isinstance(x, list) and all(is_number(v) for v in x)


def is_top(x: object) -> bool:
    """[[token, probability], ...]"""
    return isinstance(x, list) and all(
        isinstance(e, list) and len(e) == 2 and is_str(e[0]) and is_number(e[1])
        and e[1] is not None for e in x)


def check_object(number: int, obj: dict, schema: Schema, optional: Schema) -> None:
    """Raise SnapshotFormatError if a key of ``schema`` is missing or a value fails its check."""
    for key, ok in schema.items():
        if key not in obj:
            raise SnapshotFormatError(number, f"{key!r} is missing")
        if not ok(obj[key]):
            raise SnapshotFormatError(number, f"{key!r} has an unexpected value "
                                              f"{short_json(obj[key])}")
    for key, ok in optional.items():
        if key in obj and not ok(obj[key]):
            raise SnapshotFormatError(number, f"{key!r} has an unexpected value "
                                              f"{short_json(obj[key])}")


def short_json(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------
# Noise floors: how far benign variants of the model move each stored value


# What a stored value is, for its floor: a number or list of numbers in a unit, a top-k list
# (probabilities), or greedy steps (margins, in logits).
VALUE_UNITS = {"prob": "prob", "logit": "logit", "recovery": "recovery", "top": "prob",
               "steps": "logit"}


def _deviation(kind: str, a: Any, b: Any) -> float | list[float | None] | None:
    """How far a variant's value ``b`` is from the model's ``a``: numbers; lists of numbers
    (per element); top-k lists (per shared token; a token that left the top-k by how far it
    was above the variant's last); greedy steps (each margin of the steps both texts share,
    and where they part, the smaller margin there)."""
    if kind == "top":
        if not (is_top(a) and is_top(b) and a and b):
            return None
        probs, last = dict((t, p) for t, p in b), b[-1][1]
        return float(max(abs(p - probs[t]) if t in probs else max(0.0, p - last)
                         for t, p in a))
    if kind == "steps":
        if not (is_steps(a) and is_steps(b)):
            return None
        out = 0.0
        for x, y in zip(a, b, strict=False):
            if x[0] != y[0]:
                return max(out, min(x[1], y[1]))
            out = max(out, abs(x[1] - y[1]))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [abs(x - y) if isinstance(x, int | float) and isinstance(y, int | float)
                and not isinstance(x, bool) and not isinstance(y, bool) else None
                for x, y in zip(a, b, strict=True)]
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    return None


def _floors(obj: dict[str, Any], others: list[dict[str, Any]], units: Mapping[str, str],
            tol: Tolerances, k: float) -> dict[str, Any]:
    """One object's sparse floors: k x the widest deviation, where wider than configured."""
    found: dict[str, Any] = {}
    for key, kind in units.items():
        if key not in obj:
            continue
        base = float(getattr(tol, VALUE_UNITS[kind]))
        devs = [d for o in others if key in o
                and (d := _deviation(kind, obj[key], o[key])) is not None]
        if not devs:
            continue
        if isinstance(devs[0], list):
            lists = [d for d in devs if isinstance(d, list)]
            widest = [max((v for d in lists if (v := d[i]) is not None), default=None)
                      for i in range(len(lists[0]))]
            cells = [rounded(k * w) if w is not None and k * w > base else None
                     for w in widest]
            if any(c is not None for c in cells):
                found[key] = cells
        else:
            worst = k * max(float(d) for d in devs if not isinstance(d, list))
            if worst > base:
                found[key] = rounded(worst)
    return found


def measure_floors(codec: SnapshotCodec[Any], base: tuple[dict[str, Any], list[dict[str, Any]]],
                   variants: list[tuple[dict[str, Any], list[dict[str, Any]]]],
                   tol: Tolerances, k: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Noise floors of a stored result: for each value, k x its largest deviation over the
    variants, where that is wider than the configured tolerance of its unit (the rest is
    left out). Variants that measured something else (identity, rows) are skipped."""
    meta, rows = base
    same = [(m, r) for m, r in variants if len(r) == len(rows)
            and all(m.get(key) == meta.get(key) for key in codec.identity)
            and all(codec.row_shape(x) == codec.row_shape(y)
                    for x, y in zip(r, rows, strict=True))]
    meta_floor = _floors(meta, [m for m, _ in same], codec.meta_units, tol, k)
    row_floors = [_floors(row, [r[i] for _, r in same], codec.units, tol, k)
                  for i, row in enumerate(rows)]
    return meta_floor, row_floors


def is_floor(x: object) -> bool:
    """A stored floor: key -> a number, or a list of numbers and nulls."""
    return isinstance(x, dict) and all(
        isinstance(k, str) and ((is_number(v) and v is not None)
                                or (isinstance(v, list) and all(is_number(e) for e in v)))
        for k, v in x.items())


# ---------------------------------------------------------------------------
# Comparisons


def rounded(x: float | None, digits: int = 4) -> float | None:
    """A stored number: rounded, NaN as None."""
    return None if x is None or math.isnan(x) else round(float(x), digits)


def number_change(old: float | None, new: float | None, tol: float) -> float:
    """How many tolerances apart (0 when within tolerance)."""
    if old is None or new is None:
        return 0.0 if old is new else EXACT
    gap = abs(new - old)
    return gap / tol if gap > tol else 0.0


def fmt(x: float | None, spec: str = ".2f") -> str:
    return "·" if x is None else format(x, spec)


def top_changes(where: str, old: list, new: list, tol: float) -> list[Change]:
    """Top-k token lists: the top-1 token (a swap with a token within ``tol`` of it, in the
    stored or the new list, is noise), and the probabilities of the tokens in both."""
    out = []
    if old and new and old[0][0] != new[0][0]:
        old_probs, new_probs = dict((t, p) for t, p in old), dict((t, p) for t, p in new)
        a, b = old[0][0], new[0][0]
        gaps = [abs(probs[a] - probs[b]) for probs in (old_probs, new_probs)
                if a in probs and b in probs]
        swap = (f"{where}: top-1 {a!r} ({old[0][1]:.2g}) -> {b!r} ({new[0][1]:.2g})")
        if gaps and min(gaps) <= tol:
            out.append(Change(0.0, f"{swap}, a near-tie (within {tol:g})", noise=True))
        else:  # how far apart the two were, in each list (a token not listed: at most the last)
            apart = min(old[0][1] - old_probs.get(b, old[-1][1]),
                        new[0][1] - new_probs.get(a, new[-1][1]))
            out.append(Change(EXACT, swap, drift=max(BEYOND, apart / tol) if tol else EXACT))
    new_probs = dict((t, p) for t, p in new)
    for token, p in old:
        q = new_probs.get(token)
        floor = new[-1][1] if new else 0.0
        if q is None and p - floor > tol:
            out.append(Change((p - floor) / tol, f"{where}: P({token!r}) {p:.2g} -> below the "
                                                 f"top-{len(new)} (<= {floor:.2g})"))
        elif q is not None and number_change(p, q, tol):
            out.append(Change(number_change(p, q, tol),
                              f"{where}: P({token!r}) {p:.2g} -> {q:.2g}"))
    return out


Steps = list[list[Any]]  # [[token, margin], ...]: a greedy text, step by step


def steps_of(tokens: tuple[str, ...] | list[str], margins: tuple[float, ...] | list[float]
             ) -> Steps:
    """The stored steps of a greedy text: each token and its margin (top-1 minus top-2
    logit when it was chosen), rounded."""
    return [[t, rounded(m, 3)] for t, m in zip(tokens, margins, strict=True)]


def is_steps(x: object) -> bool:
    """[[token, margin], ...]"""
    return isinstance(x, list) and all(
        isinstance(e, list) and len(e) == 2 and is_str(e[0]) and is_number(e[1])
        and e[1] is not None for e in x)


def text_change(where: str, old: str | None, new: str | None, old_steps: Steps | None = None,
                new_steps: Steps | None = None, tol: float = 0.0) -> list[Change]:
    """A greedy text: exact, except that texts parting at a step chosen by a margin below
    ``tol`` (in the stored or the new run) are a near-tie, and nothing after it counts."""
    if old == new:
        return []
    change = f"{where} {old!r} -> {new!r}"
    if old_steps is not None and new_steps is not None:
        first = next((i for i, (a, b) in enumerate(zip(old_steps, new_steps, strict=False))
                      if a[0] != b[0]), min(len(old_steps), len(new_steps)))
        margins = [s[first][1] for s in (old_steps, new_steps) if first < len(s)]
        if margins and min(margins) < tol:
            return [Change(0.0, f"{change}, parted at step {first} where the top two were "
                                f"{min(margins):.3f} apart (a near-tie, below {tol:g})",
                           noise=True)]
        if margins and tol:  # drift: how decided the step where they part was
            return [Change(EXACT, change, drift=max(BEYOND, min(margins) / tol))]
    return [Change(EXACT, change)]
