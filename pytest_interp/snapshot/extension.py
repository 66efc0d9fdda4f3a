"""expect layer: the syrupy extension and assertion behind ``interp_snapshot``: amber files with the
``.interp`` extension (one per test module), results stored as readable text and compared within
noise floors; one snapshot per test in a series; drift budgets; a stored file it cannot read named
by file and line."""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any, ClassVar

from syrupy.assertion import SnapshotAssertion
from syrupy.extensions.amber import AmberSnapshotExtension

from ..codec import (
    EXACT,
    Change,
    SnapshotFormatError,
    Tolerances,
)
from ..errors import InterpError
from ..record import SnapshotChecked, SnapshotDiff, SnapshotNoise, record
from ..report.summary import series_key
from ..settings import check_budget
from ..storage import disk_full, is_disk_full, part_of
from .calibrate import Calibrator
from .compare import Listing, compare, environment, explain
from .stored import (
    Floors,
    codec_for,
    dtype_scale,
    floors_of,
    has_floors,
    is_ours,
    parse,
    provenance_of,
    render,
)


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
        return series_key(str(super().get_snapshot_name(test_location=test_location,
                                                         index=index)), cls.series_id)

    def serialize(self, data: Any, **kwargs: Any) -> str:
        self._reference: tuple[str, str] | None = None
        if codec_for(data) is not None:
            floors = self.calibrator.floors(data) if self.calibrator is not None else None
            text = render(data, self.dtype, floors, provenance_of(data))
            baseline = type(self).baseline  # a function on the class, not a method
            if baseline is not None and not self.updating:
                self._reference = baseline(data, floors_of(self._stored))
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
        """syrupy merges into the existing file, here always by writing a temporary file and
        replacing (a run killed at any moment leaves the old file or the new one, a full disk
        the old one); one that is not UTF-8 is first moved out of ``__snapshots__`` (where
        syrupy would delete it) to ``<file>.unreadable`` beside it, with a warning, so
        --snapshot-update can re-create it and nothing is lost."""

        path = Path(snapshot_collection.location)
        try:
            if path.is_file():
                path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            aside = path.parent.parent / (path.name + ".unreadable")
            path.replace(aside)
            warnings.warn(f"pytest-interp: {path} was not UTF-8 text; moved it to {aside} and "
                          "wrote the snapshots afresh", stacklevel=1)
        from syrupy.utils import snapshot_file_lock_enabled

        try:
            if snapshot_file_lock_enabled():  # under xdist: syrupy's locked, atomic write
                cls.serializer_class.write_file(snapshot_collection, merge=True,
                                                name_order=name_order, file_lock=True)
            else:
                cls._replace(path, snapshot_collection, merge=True, name_order=name_order)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(path) from None
            raise

    def delete_snapshots(self, snapshot_location: str, snapshot_names: set[str]) -> None:
        """syrupy's delete of unused snapshots, as an atomic rewrite in one process too."""
        from syrupy.utils import snapshot_file_lock_enabled

        if snapshot_file_lock_enabled():
            super().delete_snapshots(snapshot_location, snapshot_names)
            return
        kept = self.serializer_class.read_file(snapshot_location)
        for name in snapshot_names:
            kept.remove(name)
        if kept.has_snapshots:
            self._replace(Path(snapshot_location), kept, merge=False)
        else:
            Path(snapshot_location).unlink(missing_ok=True)

    @classmethod
    def _replace(cls, path: Path, collection: Any, *, merge: bool,
                 name_order: dict[str, int] | None = None) -> None:
        """syrupy's write of ``collection`` (merged into the file, if ``merge``) made into a
        copy beside ``path``, which then replaces it: never a half-written file."""
        from syrupy.data import SnapshotCollection

        part = part_of(path)
        try:
            if merge and path.is_file():
                shutil.copyfile(path, part)
            staged = SnapshotCollection(location=str(part))
            for snapshot in collection:
                staged.add(snapshot)
            cls.serializer_class.write_file(staged, merge=merge, name_order=name_order)
            with open(part, "rb+") as written:
                os.fsync(written.fileno())
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)

    def _file(self) -> str:
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
        if self.recalibrate and has_floors(serialized_data) != has_floors(snapshot_data):
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
        floored = f" and {where} stored floors" if has_floors(snapshot_data) else ""
        yield from explain(
            found, f"{meta.get('kind', 'result')} of {meta.get('model', '?')} changed{against}",
            self._tolerances(*dtypes), dtypes, floored, environment(snapshot_data, meta),
            Listing(self.details, self.shown,
                    None if against else "--snapshot-update accepts them",
                    (drift, self.max_drift)))


_DIFFS: dict[tuple[int, int], list[str]] = {}  # (serialized, stored) hashes -> failure text


def _pair(serialized: str, stored: str) -> tuple[int, int]:
    return hash(serialized), hash(stored)


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


Baseline = Callable[[Any, "Floors | None"], "tuple[str, str] | None"]
"""result, the stored snapshot's floors -> (the baseline's result as stored text, " from
baseline SPEC"), or None when there is nothing to compare (no recipe, the baseline itself)."""


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
