"""Snapshot codecs: how one kind of result is stored, checked and compared (no torch).

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

R = TypeVar("R")
Check = Callable[[object], bool]
Schema = Mapping[str, Check]

TIE = 1e-4  # probabilities this close are a tie: their order is noise
EXACT = 1e9  # the size of a change in tokens, texts or labels (sorted before number changes)


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances: probabilities and attention scores, logits, recovery."""

    prob: float = 0.02
    logit: float = 0.1
    recovery: float = 0.05


@dataclass(frozen=True)
class Change:
    """One difference in model terms; ``size`` is |difference| / tolerance, or EXACT."""

    size: float
    text: str


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
    identity: ClassVar[tuple[str, ...]] = ()
    """Metadata keys that must be equal for two results to be the same measurement."""
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


def is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_number(x: object) -> bool:
    """A finite number, or None (what NaN is stored as)."""
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool)
                         and math.isfinite(x))


def is_opt_str(x: object) -> bool:
    return x is None or isinstance(x, str)


def is_strs(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(t, str) for t in x)


def is_ints(x: object) -> bool:
    return isinstance(x, list) and all(is_int(p) for p in x)


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
    """Top-k token lists: top-1 identity (ties aside), probabilities of shared tokens."""
    out = []
    if old and new and old[0][0] != new[0][0]:
        old_probs = dict((t, p) for t, p in old)
        tied = new[0][0] in old_probs and abs(old_probs[new[0][0]] - old[0][1]) <= TIE
        if not tied:
            out.append(Change(EXACT, f"{where}: top-1 {old[0][0]!r} ({old[0][1]:.2g}) -> "
                                     f"{new[0][0]!r} ({new[0][1]:.2g})"))
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


def text_change(where: str, old: str | None, new: str | None) -> list[Change]:
    """A generated or decoded text: exact."""
    return [] if old == new else [Change(EXACT, f"{where} {old!r} -> {new!r}")]
