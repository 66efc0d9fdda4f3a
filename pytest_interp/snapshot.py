"""Snapshots of results (syrupy): readable JSON-lines text, tolerant comparison, model-term diffs.

A result snapshot is a header line, a metadata object and one JSON object per row (a layer,
a head, a layer pair, a coefficient), stored in syrupy's amber-style files with the
``.interp`` extension (one per test module). What each kind stores and how its rows compare
is its codec (``pytest_interp.codec``), found in the registry; this module does the rest for
every kind: the header, file checks, the generic identity and row-shape comparison, and the
syrupy extension. Other data (e.g. a generated string) is stored and compared as syrupy's
amber format does.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any, ClassVar

from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.amber import AmberSnapshotExtension

from .codec import (
    EXACT,
    Change,
    SnapshotCodec,
    SnapshotFormatError,
    Tolerances,
    check_object,
    is_floor,
    is_str,
    measure_floors,
    short_json,
)
from .errors import InterpError
from .record import ORIGINS, SnapshotChecked, SnapshotDiff, SnapshotNoise, record
from .registry import KINDS
from .settings import check_budget

HEADER = "pytest-interp snapshot v1"

__all__ = ["Change", "InterpSnapshotExtension", "SnapshotFormatError", "Tolerances",
           "against_baseline", "compare", "explain", "parse", "render", "summarize",
           "with_tolerance"]


def codec_for(result: object) -> SnapshotCodec[Any] | None:
    """The codec of ``result``'s kind (None: not a result snapshots know)."""
    kind = KINDS.for_result(result)
    return kind.codec if kind is not None else None


def summarize(result: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The stored form of a result: what snapshots compare."""
    codec = codec_for(result)
    if codec is None:
        raise TypeError(f"no interp snapshot for {type(result).__name__}")
    meta, rows = codec.summarize(result)
    return {"kind": codec.kind} | meta, rows


# Tolerances are set for float32; a half-precision run (or snapshot) widens them. Measured on
# the SmolLM2 example suite against its float32 snapshots: bfloat16 moved probabilities by up
# to 3.5x and logits by 2.5x the float32 tolerances; float16 stayed within them.
DTYPE_TOLERANCE_SCALE = {"float32": 1.0, "float16": 2.0, "bfloat16": 4.0}


def dtype_scale(*dtypes: str | None) -> float:
    """The tolerance factor for comparing results computed in these dtypes (the coarsest)."""
    return max(DTYPE_TOLERANCE_SCALE.get(d or "float32", 1.0) for d in dtypes)


Floors = tuple[dict[str, Any], list[dict[str, Any]]]  # (metadata floor, per-row floors)


def render(result: Any, dtype: str = "float32", floors: Floors | None = None,
           provenance: dict[str, str] | None = None) -> str:
    """The stored text of a result. ``dtype`` (when not float32), its ``provenance`` (what
    computed it) and its noise ``floors`` (where wider than the configured tolerances) are
    kept in the metadata and rows."""
    meta, rows = summarize(result)
    if dtype != "float32":
        meta["dtype"] = dtype
    if provenance:
        meta["provenance"] = provenance
    if floors is not None:
        meta_floor, row_floors = floors
        if meta_floor:
            meta["floor"] = meta_floor
        for row, floor in zip(rows, row_floors, strict=True):
            if floor:
                row["floor"] = floor
    lines = [f"{HEADER}: {meta['kind']} of {meta['model']}",
             json.dumps(meta, ensure_ascii=False)]
    lines += [json.dumps(row, ensure_ascii=False) for row in rows]
    return "\n".join(lines)


def parse(text: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a stored snapshot; SnapshotFormatError names the first bad line (1 = header)."""
    lines = text.strip("\n").split("\n")
    if not lines[0].startswith(HEADER):
        raise SnapshotFormatError(1, f"not a '{HEADER}' header")
    objects = []
    for number, line in enumerate(lines[1:], 2):
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise SnapshotFormatError(number, f"not JSON ({exc.msg})") from None
        except RecursionError:
            raise SnapshotFormatError(number, "nested too deeply") from None
        if not isinstance(objects[-1], dict):
            raise SnapshotFormatError(number, "not a JSON object")
    if not objects:
        raise SnapshotFormatError(2, "the metadata line is missing")
    _check(objects[0], objects[1:])
    return objects[0], objects[1:]


def _check(meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Raise SnapshotFormatError at the first line whose keys or values are not what the kind
    stores (so comparison never meets a missing key or a wrong type)."""
    kind = meta.get("kind")
    codec = KINDS.codec_named(kind) if isinstance(kind, str) else None
    if codec is None:
        raise SnapshotFormatError(2, f"kind {kind!r} is not one of "
                                     f"{', '.join(KINDS.codec_names())}")
    if "dtype" in meta and meta["dtype"] not in DTYPE_TOLERANCE_SCALE:
        raise SnapshotFormatError(2, f"dtype {short_json(meta['dtype'])} is not one of "
                                     f"{', '.join(DTYPE_TOLERANCE_SCALE)}")
    if not is_str(meta.get("model")):
        raise SnapshotFormatError(2, "'model' is missing or not a string")
    check_object(2, meta, codec.meta_schema, {"floor": is_floor, "provenance": _is_provenance,
                                              **codec.optional_meta})
    codec.check_rows(meta, rows)
    for number, row in enumerate(rows, 3):
        check_object(number, row, {}, {"floor": is_floor})


def _is_provenance(x: object) -> bool:
    return isinstance(x, dict) and all(isinstance(v, str) for v in x.values())


def is_ours(text: object) -> bool:
    return isinstance(text, str) and text.lstrip("\n").startswith(HEADER)


# ---------------------------------------------------------------------------
# Comparison in model terms


def compare(old: tuple[dict[str, Any], list[dict[str, Any]]],
            new: tuple[dict[str, Any], list[dict[str, Any]]], tol: Tolerances) -> list[Change]:
    """Every change beyond tolerance from the stored ``old`` to the ``new`` result, largest
    first. Results of another measurement (kind, identity, rows) are one EXACT change."""
    (om, orows), (nm, nrows) = old, new
    was, now = om.get("provenance") or {}, nm.get("provenance") or {}
    if was.get("tokenizer") and now.get("tokenizer") and was["tokenizer"] != now["tokenizer"]:
        return [Change(EXACT, f"tokenization changed (tokenizer {was['tokenizer']} -> "
                              f"{now['tokenizer']}): positions are not comparable; "
                              "--snapshot-update records the new tokenization")]
    codec = KINDS.codec_named(str(om.get("kind")))
    identity = codec.identity if codec is not None else ()
    if codec is None or om.get("kind") != nm.get("kind") or len(orows) != len(nrows) or any(
            om.get(k) != nm.get(k) for k in identity):
        new_codec = KINDS.codec_named(str(nm.get("kind")))
        keys = ("kind", *(new_codec.identity if new_codec is not None else ()))
        what = [k for k in keys if om.get(k) != nm.get(k)]
        detail = ", ".join(f"{k} {om.get(k)!r} -> {nm.get(k)!r}" for k in what) or \
            f"{len(orows)} rows -> {len(nrows)} rows"
        return [Change(EXACT, f"a different measurement: {detail}")]
    for number, (o, n) in enumerate(zip(orows, nrows, strict=True), 1):
        if codec.row_shape(o) != codec.row_shape(n):
            return [Change(EXACT, f"a different measurement: row {number} is "
                                  f"{codec.row_shape(o)} in the snapshot, {codec.row_shape(n)} "
                                  "now")]
    changes = codec.compare_rows(om, nm, orows, nrows, tol)
    return sorted(changes, key=lambda c: -c.size)


# ---------------------------------------------------------------------------
# The syrupy extension


class InterpSnapshotExtension(AmberSnapshotExtension):
    """Amber files; results stored as readable JSON lines and compared within tolerances."""

    file_extension = "interp"  # its own files: syrupy's default amber never claims them
    tolerances: ClassVar[Tolerances] = Tolerances()
    details: ClassVar[bool] = False
    dtype: ClassVar[str] = "float32"  # the run's dtype (the fixture sets the test model's)
    shown: ClassVar[int] = 10  # changes listed in a failure without --snapshot-details

    calibrator: ClassVar[Calibrator | None] = None  # set when snapshots are (re)written
    recalibrate: ClassVar[bool] = False  # --interp-calibrate: rewrite changed floors too
    max_drift: ClassVar[float] = 1.0  # the drift budget, in noise floors (1: none beyond noise)
    report_drift: ClassVar[bool] = False  # --interp-drift=report: over budget is DRIFT, not FAIL
    updating: ClassVar[bool] = False  # --snapshot-update writes what moved, within budget too
    series_id: ClassVar[str | None] = None  # the model's id in a series: not in the name
    baseline: ClassVar[Baseline | None] = None  # --interp-baseline: compare with its result

    @classmethod
    def get_snapshot_name(cls, *, test_location: Any, index: Any = 0) -> str:
        """syrupy's name without the series model's id: a test's one snapshot, whichever
        model of a series runs it (``test_x[step_00200]`` reads ``test_x``)."""
        from .report.summary import series_key

        return series_key(str(super().get_snapshot_name(test_location=test_location,
                                                         index=index)), cls.series_id)

    def serialize(self, data: Any, **kwargs: Any) -> str:
        self._reference: tuple[str, str] | None = None
        if codec_for(data) is not None:
            floors = self.calibrator.floors(data) if self.calibrator is not None else None
            text = render(data, self.dtype, floors, provenance_of(data))
            baseline = type(self).baseline  # a function on the class, not a method
            if baseline is not None and not self.updating:
                self._reference = baseline(data, _floors_of(self._stored))
            return text
        return str(super().serialize(data, **kwargs))

    _source: tuple[str, str] | None = None  # (file, snapshot name) last read
    _stored: Any = None  # the stored text last read

    def read_snapshot_data_from_location(
        self, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> Any:
        """syrupy's read, with a file it cannot read turned into an "unreadable" value that
        fails the assertion naming the file and line (not a traceback, not "does not exist")."""
        from syrupy.exceptions import TaintedSnapshotError

        self._source, self._stored = (snapshot_location, snapshot_name), None
        try:
            data = super().read_snapshot_data_from_location(
                snapshot_location=snapshot_location, snapshot_name=snapshot_name,
                session_id=session_id)
        except UnicodeDecodeError as exc:
            return _unreadable(f"{self._file()}:{_line_of_byte(snapshot_location, exc.start)}: "
                               f"not UTF-8 text (byte {exc.object[exc.start]:#04x})")
        except TaintedSnapshotError:
            first = _first_line(snapshot_location)
            if first.startswith("# serializer version:"):
                raise  # written by another syrupy version: syrupy's own message says so
            return _unreadable(f"{self._file()}:1: does not start with '# serializer version: "
                               f"1' (found {first[:40]!r})")
        if data is None:
            line = _name_line(snapshot_location, snapshot_name)
            if line is not None:  # named in the file, but syrupy dropped it
                return _unreadable(f"{self._file()}:{line}: snapshot {snapshot_name} has no "
                                   "closing '# ---' line (is the file truncated?)")
        self._stored = data
        return data

    def read_snapshot_collection(self, snapshot_location: str) -> Any:
        """A file that is not UTF-8 reads as empty here (the assertion reports it)."""
        try:
            return super().read_snapshot_collection(snapshot_location)
        except UnicodeDecodeError:
            from syrupy.data import SnapshotCollection

            return SnapshotCollection(location=snapshot_location)

    @classmethod
    def write_snapshot_collection(cls, *, snapshot_collection: Any,
                                  name_order: dict[str, int] | None = None) -> None:
        """syrupy merges into the existing file; one that is not UTF-8 is first moved out of
        ``__snapshots__`` (where syrupy would delete it) to ``<file>.unreadable`` beside it,
        with a warning, so --snapshot-update can re-create it and nothing is lost."""
        import warnings
        from pathlib import Path

        path = Path(snapshot_collection.location)
        try:
            if path.is_file():
                path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            aside = path.parent.parent / (path.name + ".unreadable")
            path.replace(aside)
            warnings.warn(f"pytest-interp: {path} was not UTF-8 text; moved it to {aside} and "
                          "wrote the snapshots afresh", stacklevel=1)
        super().write_snapshot_collection(snapshot_collection=snapshot_collection,
                                          name_order=name_order)

    def _file(self) -> str:
        import os

        location = self._source[0] if self._source else "the snapshot file"
        shown = os.path.relpath(location)
        return location if shown.startswith("..") else shown

    def _changes(self, serialized: str, stored: str) -> list[Change]:
        try:
            old = parse(stored)
        except SnapshotFormatError as exc:
            return [Change(EXACT, f"the stored snapshot cannot be read: {self._where(exc.line)}: "
                                  f"{exc.problem}; fix it by hand or re-create it with "
                                  "--snapshot-update")]
        new = parse(serialized)
        return compare(old, new, self._tolerances(old[0].get("dtype"), new[0].get("dtype")))

    def _tolerances(self, *dtypes: str | None) -> Tolerances:
        """The configured tolerances, widened for the coarsest of ``dtypes``."""
        scale = dtype_scale(*dtypes)
        return Tolerances(*(getattr(self.tolerances, f.name) * scale
                            for f in fields(Tolerances)))

    def _where(self, line: int) -> str:
        """``path:line`` in the snapshot file for line ``line`` of the stored snapshot."""
        if self._source is None:
            return f"line {line} of the snapshot"
        start = _name_line(*self._source)
        if start is None:
            return f"{self._file()}, snapshot {self._source[1]}, line {line}"
        return f"{self._file()}:{start + line} (snapshot {self._source[1]})"

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        if _is_unreadable(snapshot_data):
            return False
        if not (is_ours(serialized_data) and is_ours(snapshot_data)):
            return bool(super().matches(serialized_data=serialized_data,
                                        snapshot_data=snapshot_data))
        reference = getattr(self, "_reference", None)
        stored, against = reference if reference is not None else (snapshot_data, "")
        changes = self._changes(serialized_data, stored)
        name = self._source[1] if self._source else "snapshot"
        noise = tuple(c.text for c in changes if c.noise)
        if noise:  # not a failure: listed by --snapshot-details and in the report
            record(SnapshotNoise(name + against, noise))
        real = [c for c in changes if not c.noise]
        drift = max((c.floors for c in real), default=0.0)
        record(SnapshotChecked(name + against, drift))
        if real:
            # syrupy asks for the diff after the assertion, on the fixture's extension: this
            # one (e.g. with_tolerance's) writes it now, with the tolerances it judged by
            lines = list(self._diff(serialized_data, stored, changes, against, drift))
            _DIFFS[_pair(serialized_data, snapshot_data)] = lines
            meta = parse(serialized_data)[0]
            diff = SnapshotDiff(f"{meta.get('kind')} of {meta.get('model')}{against}", stored,
                                serialized_data, tuple(c.text for c in real), tuple(lines),
                                drift, self.max_drift)
            record(diff)
            if self.updating:
                return False  # --snapshot-update records what moved
            return diff.within or (self.report_drift and not diff.measurement)
        if self.recalibrate and _has_floors(serialized_data) != _has_floors(snapshot_data):
            return False  # a re-measured floor: --snapshot-update writes it
        return True

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        if _is_unreadable(snapshot_data):
            yield (f"the stored snapshot cannot be read: {snapshot_data[len(_UNREADABLE):]}; fix "
                   "it by hand or re-create it with --snapshot-update")
            return
        if not (is_ours(serialized_data) and is_ours(snapshot_data)):
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        lines = _DIFFS.get(_pair(serialized_data, snapshot_data))
        if lines is None:
            changes = self._changes(serialized_data, snapshot_data)
            drift = max((c.floors for c in changes if not c.noise), default=0.0)
            lines = list(self._diff(serialized_data, snapshot_data, changes, "", drift))
        yield from lines

    def _diff(self, serialized_data: str, snapshot_data: str, found: list[Change],
              against: str, drift: float) -> Iterator[str]:
        """The failure text: what changed beyond the noise floor, largest first."""
        meta = parse(serialized_data)[0]
        try:
            dtypes = (parse(snapshot_data)[0].get("dtype"), meta.get("dtype"))
        except SnapshotFormatError:
            dtypes = (None, meta.get("dtype"))
        where = "the baseline's" if against else "the snapshot's"
        floored = f" and {where} stored floors" if _has_floors(snapshot_data) else ""
        yield from explain(
            found, f"{meta.get('kind', 'result')} of {meta.get('model', '?')} changed{against}",
            self._tolerances(*dtypes), dtypes, floored, _environment(snapshot_data, meta),
            details=self.details, shown=self.shown,
            accept=None if against else "--snapshot-update accepts them",
            drift=(drift, self.max_drift))


def explain(found: list[Change], subject: str, tolerances: Tolerances,
            dtypes: tuple[str | None, str | None], floored: str = "", environment: str = "", *,
            details: bool = False, shown: int = 10, accept: str | None = None,
            drift: tuple[float, float] | None = None) -> Iterator[str]:
    """A failure's text: ``subject`` beyond the noise floor, then the changes largest first
    (``shown`` of them unless ``details``), then how to accept them, then the ``drift`` (in
    noise floors) against its budget."""
    changes = [c for c in found if not c.noise]
    noise = [c for c in found if c.noise]
    listed = changes if details else changes[:shown]
    tolerance = _tolerance_text(tolerances)
    if dtype_scale(*dtypes) != 1:
        coarsest = max(dtypes, key=lambda d: dtype_scale(d))
        tolerance += f"; x{dtype_scale(*dtypes):g} for {coarsest}"
    yield (f"{subject} beyond the noise floor (tolerances {tolerance}{floored}), "
           f"{len(changes)} change{'s' if len(changes) != 1 else ''}, largest first:")
    if environment:
        yield f"  ({environment})"
    for change in listed:
        yield f"  {change.text}"
    if len(listed) < len(changes):
        yield (f"  ... {len(changes) - len(listed)} more (--snapshot-details shows all"
               + (f"; {accept})" if accept else ")"))
    elif accept:
        yield f"  ({accept})"
    if noise and details:
        yield f"  near-ties, not counted ({len(noise)}):"
        yield from (f"  ~ {c.text}" for c in noise)
    if drift is not None and changes:
        yield drift_line(*drift)


def drift_line(drift: float, budget: float) -> str:
    """How far a result drifted, in noise floors, against its budget."""
    if drift >= EXACT:
        return "  (a change of the measurement itself, not drift: no budget covers it)"
    if drift <= budget:
        return f"  drift {drift:.3g} noise floors, within the budget of {budget:g}"
    return (f"  drift {drift:.3g} noise floors, over the budget of {budget:g} (raise it with "
            "interp_snapshot(max_drift=N) or --interp-max-drift=N)")


def against_baseline(result: Any, baseline: Any, spec: str, tolerances: Tolerances,
                     floors: Floors | None, dtypes: tuple[str, str], *, details: bool = False,
                     shown: int = 10, max_drift: float = 1.0
                     ) -> SnapshotDiff | SnapshotNoise | None:
    """``result`` compared with ``baseline`` (the same probe on the ``--interp-baseline``
    model, with its noise ``floors``) as a snapshot written on the baseline would be: a
    SnapshotDiff of the changes beyond the floor (with their drift against ``max_drift``),
    else the near-ties, else None."""
    stored = render(baseline, dtypes[0], floors, provenance_of(baseline))
    serialized = render(result, dtypes[1], None, provenance_of(result))
    scale = dtype_scale(*dtypes)
    tol = Tolerances(*(getattr(tolerances, f.name) * scale for f in fields(Tolerances)))
    found = compare(parse(stored), parse(serialized), tol)
    meta = parse(serialized)[0]
    name = f"{meta.get('kind')} of {meta.get('model')} from baseline {spec}"
    real = [c for c in found if not c.noise]
    if not real:
        return SnapshotNoise(name, tuple(c.text for c in found)) if found else None
    drift = max(c.floors for c in real)
    floored = " and the baseline's measured floors" if _has_floors(stored) else ""
    lines = explain(found, f"{meta.get('kind')} of {meta.get('model')} changed from baseline "
                           f"{spec}", tol, dtypes, floored, details=details, shown=shown,
                    drift=(drift, max_drift))
    return SnapshotDiff(name, stored, serialized, tuple(c.text for c in real), tuple(lines),
                        drift, max_drift)


def reference_text(baseline: Any, dtype: str, floors: Floors | None) -> str:
    """The stored form of a baseline's result that a snapshot is compared with, with
    ``floors`` (a stored snapshot's, where it has as many rows)."""
    if floors is not None and len(floors[1]) != len(summarize(baseline)[1]):
        floors = None
    return render(baseline, dtype, floors, provenance_of(baseline))


Baseline = Callable[[Any, "Floors | None"], "tuple[str, str] | None"]
"""result, the stored snapshot's floors -> (the baseline's result as stored text, " from
baseline SPEC"), or None when there is nothing to compare (no recipe, the baseline itself)."""


_DIFFS: dict[tuple[int, int], list[str]] = {}  # (serialized, stored) hashes -> failure text


def _pair(serialized: str, stored: str) -> tuple[int, int]:
    return hash(serialized), hash(stored)


def _floors_of(text: object) -> Floors | None:
    """A stored snapshot's floors as ``render`` takes them (empty where it has none: they
    were measured and none was wider than the tolerances); None: no readable snapshot."""
    if not is_ours(text):
        return None
    try:
        meta, rows = parse(str(text))
    except SnapshotFormatError:
        return None
    return meta.get("floor") or {}, [row.get("floor") or {} for row in rows]


def _has_floors(text: str) -> Any:
    """A stored snapshot's floors (metadata's, then each row's); falsy when it has none."""
    try:
        meta, rows = parse(text)
    except SnapshotFormatError:
        return None
    floors = [meta.get("floor")] + [row.get("floor") for row in rows]
    return floors if any(floors) else None


def _environment(stored: str, meta: dict[str, Any]) -> str:
    """What changed besides the numbers: the weights (their fingerprints differ), or, when
    they are the same, the environment."""
    try:
        was = parse(stored)[0].get("provenance") or {}
    except SnapshotFormatError:
        return ""
    return weights_note(was, meta.get("provenance") or {})


def weights_note(was: dict[str, str], now: dict[str, str]) -> str:
    """Whether the weights changed, from two provenances (``""``: not known)."""
    old, new = was.get("weights"), now.get("weights")
    if not old or not new:
        return ""
    if old != new:
        if _partial(old) != _partial(new):
            return (f"the snapshot's weights fingerprint {old} predates full-content hashes, so "
                    f"whether the weights changed is not known; --snapshot-update records {new}")
        return f"the weights changed ({old} -> {new})"
    moved = [f"{k} {was.get(k)} -> {now.get(k)}" for k in sorted(set(was) | set(now))
             if k not in ("weights", "tokenizer") and was.get(k) != now.get(k)]
    return (f"the weights are unchanged ({old}): the environment changed "
            f"({', '.join(moved) or 'device, threads or kernels'}), not the model")


def _partial(fingerprint: str) -> bool:
    """A file fingerprint of pytest-interp 0.1 before full-content hashes (16 hex digits,
    from the first and last 4 MiB of the file only)."""
    import re

    return re.fullmatch(r"[0-9a-f]{16}", fingerprint) is not None


# ---------------------------------------------------------------------------
# Noise floors, measured when a snapshot is written


class Calibrator:
    """Measures a result's noise floor: re-runs the probe that computed it on benign variants
    of its model (the other backend, weights rounded through bfloat16, seeded relative weight
    noise) and keeps k x the largest deviation of each value (``codec.measure_floors``)."""

    def __init__(self, pool: Any, perturbations: tuple[str, ...], k: float,
                 tolerances: Tolerances) -> None:
        self.pool, self.perturbations, self.k, self.tolerances = pool, perturbations, k, \
            tolerances
        self._done: weakref.WeakKeyDictionary[Any, Floors] = weakref.WeakKeyDictionary()

    def floors(self, result: Any) -> Floors | None:
        """The floors of ``result`` (None: no recipe to re-run, e.g. a hand-built result)."""
        from .record import recording

        if result in self._done:
            return self._done[result]
        origin, codec = ORIGINS.get(result), codec_for(result)
        if origin is None or codec is None:
            return None
        model, recipe = origin
        base = model.request
        if base is None or base.remote:  # variants of a remote model would run remotely too
            return None
        variants = []
        with recording():  # the variants' results are not this test's figures
            for perturbation in self.perturbations:
                request = base
                if perturbation == "backend":
                    request = dataclasses.replace(
                        request, backend="nnsight" if request.backend == "transformer_lens"
                        else "transformer_lens")
                else:
                    request = dataclasses.replace(request, perturbation=perturbation)
                variants.append(codec.summarize(recipe(self.pool.get(request))))
        floors = measure_floors(codec, codec.summarize(result), variants, self.tolerances,
                                self.k)
        self._done[result] = floors
        return floors


def provenance_of(result: Any) -> dict[str, str] | None:
    """What computed a result: weights and tokenizer fingerprints, backend and libraries."""
    origin = ORIGINS.get(result)
    return origin[0].provenance if origin is not None else None


_UNREADABLE = "pytest-interp cannot read this snapshot: "


def _unreadable(problem: str) -> str:
    return _UNREADABLE + problem


def _is_unreadable(data: object) -> bool:
    return isinstance(data, str) and data.startswith(_UNREADABLE)


def _name_line(location: str, name: str) -> int | None:
    """The line number of ``# name: <name>`` in a snapshot file (None if absent)."""
    try:
        with open(location, encoding="utf-8", errors="replace") as file:
            for number, text in enumerate(file, 1):
                if text.rstrip("\r\n") == f"# name: {name}":
                    return number
    except OSError:
        pass
    return None


def _line_of_byte(location: str, offset: int) -> int:
    with open(location, "rb") as file:
        return file.read(offset).count(b"\n") + 1


def _first_line(location: str) -> str:
    try:
        with open(location, encoding="utf-8", errors="replace") as file:
            return file.readline().rstrip("\r\n")
    except OSError:
        return ""


def _tolerance_text(tol: Tolerances) -> str:
    return ", ".join(f"{f.name} {getattr(tol, f.name):g}" for f in fields(tol))


def with_budget(base: type[InterpSnapshotExtension], max_drift: float
                ) -> type[InterpSnapshotExtension]:
    """An extension class whose snapshots may drift ``max_drift`` noise floors and pass
    (with their diff shown)."""
    return type("InterpSnapshotExtension", (base,), {"max_drift": check_budget(max_drift)})


class InterpSnapshotAssertion(SnapshotAssertion):
    """syrupy's assertion; ``interp_snapshot(max_drift=5) == result`` lets this one snapshot
    drift 5 noise floors and pass, its diff shown. ``passive``: under --snapshot-update, a
    model of a series that does not write: it neither reads nor writes (passes)."""

    passive = False

    def _assert(self, data: Any) -> bool:
        return True if self.passive else bool(super()._assert(data))

    def __call__(self, *, max_drift: float | None = None, **kwargs: Any) -> Any:
        if max_drift is not None:
            base = kwargs.get("extension_class") or self.extension_class
            if not (isinstance(base, type) and issubclass(base, InterpSnapshotExtension)):
                raise TypeError("max_drift= needs pytest-interp's snapshot extension")
            try:
                kwargs["extension_class"] = with_budget(base, max_drift)
            except InterpError as exc:
                import pytest

                pytest.fail(f"pytest-interp: interp_snapshot(max_drift={max_drift!r}): {exc}",
                            pytrace=False)
        return super().__call__(**kwargs)


def with_tolerance(base: type[InterpSnapshotExtension] = InterpSnapshotExtension,
                   **tolerances: float) -> type[InterpSnapshotExtension]:
    """An extension class with some tolerances changed:
    ``assert interp_snapshot(extension_class=with_tolerance(prob=0.05)) == result``."""
    names = {f.name for f in fields(Tolerances)}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise TypeError(f"unknown tolerance {unknown[0]!r}: use {', '.join(sorted(names))}")
    merged = Tolerances(**({f.name: getattr(base.tolerances, f.name) for f in fields(Tolerances)}
                           | {k: float(v) for k, v in tolerances.items()}))
    return type("InterpSnapshotExtension", (base,), {"tolerances": merged})
