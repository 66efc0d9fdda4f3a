"""Snapshots of results (syrupy): readable JSON-lines text, tolerant comparison, model-term diffs.

A result snapshot is a header line, a metadata object and one JSON object per row (a layer,
a head, a layer pair, a coefficient), stored in syrupy's per-module ``.ambr`` files. Numbers
are compared within tolerances (probabilities, logits/logit diffs, recovery); tokens, texts and
labels exactly, except that a top-1 swap between near-tied tokens or a label flip with every
score within tolerance is noise, not change. Other data (e.g. a generated string) is stored
and compared as syrupy's amber format does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from syrupy.extensions.amber import AmberSnapshotExtension

from .record import SnapshotDiff, record
from .results import (
    ATTENTION_KINDS,
    AttentionResult,
    LensResult,
    PatchingResult,
    PatchscopeResult,
    SteeringResult,
)

HEADER = "pytest-interp snapshot v1"
TIE = 1e-4  # probabilities this close are a tie: their order is noise
EXACT = 1e9  # the size of a change in tokens, texts or labels (sorted before number changes)


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances: probabilities and attention scores, logits, recovery."""

    prob: float = 0.02
    logit: float = 0.1
    recovery: float = 0.05


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


# ---------------------------------------------------------------------------
# Summaries: result -> (metadata, rows)


def summarize(result: Any) -> tuple[dict, list[dict]]:
    """The stored form of a result: what snapshots compare."""
    if isinstance(result, LensResult):
        meta = {"kind": "lens", "model": result.model, "lens": result.lens,
                "prompt": result.prompt, "tokens": list(result.str_tokens),
                "positions": list(result.positions)}
        rows = [{"layer": layer, "position": pos,
                 "top": [[t, _r(p)] for t, p in result.top(layer, 3, pos - len(result.str_tokens))]}
                for layer in range(result.n_layers) for pos in result.positions]
        return meta, rows
    if isinstance(result, PatchingResult):
        meta = {"kind": "patching", "model": result.model, "site": result.site,
                "clean": result.clean, "corrupted": result.corrupted, "answer": result.answer,
                "foil": result.foil, "tokens": list(result.clean_tokens),
                "clean_logit_diff": _r(result.clean_logit_diff),
                "corrupted_logit_diff": _r(result.corrupted_logit_diff)}
        rec = result.recovery
        columns = "heads" if result.heads and not result.per_position else "positions"
        rows = []
        for layer in range(rec.shape[0]):
            if rec.ndim == 3:
                rows += [{"layer": layer, "head": h, "recovery": [_r(x, 3) for x in rec[layer, h]]}
                         for h in range(rec.shape[1])]
            else:
                rows.append({"layer": layer, columns: [_r(x, 3) for x in rec[layer]]})
        return meta, rows
    if isinstance(result, PatchscopeResult):
        meta = {"kind": "patchscope", "model": result.model, "source": result.source,
                "source_position": result.source_position, "target": result.target,
                "target_position": result.target_position, "expected": result.expected}
        rows = [{"layers": f"{s}->{t}", "text": text}
                | ({"p": _r(result.expected_prob[i])} if result.expected_prob else {})
                for i, ((s, t), text) in enumerate(zip(result.pairs, result.continuations,
                                                       strict=True))]
        return meta, rows
    if isinstance(result, SteeringResult):
        meta = {"kind": "steering", "model": result.model, "prompt": result.prompt,
                "layer": result.layer, "site": result.site, "positions": result.positions,
                "target": result.target, "foil": result.foil, "baseline": _r(result.baseline),
                "baseline_top": [[t, _r(p)] for t, p in result.baseline_top],
                "baseline_text": result.baseline_text}
        rows = [{"coef": coef, "value": None if result.values is None else _r(result.values[i]),
                 "kl": _r(result.kl[i]), "top": [[t, _r(p)] for t, p in result.steered_top[i]]}
                | ({"text": result.texts[i]} if result.texts is not None else {})
                for i, coef in enumerate(result.coefs)]
        return meta, rows
    if isinstance(result, AttentionResult):
        meta = {"kind": "attention", "model": result.model, "prompt": result.prompt,
                "seed": result.seed, "n": result.n}
        rows = [{"head": f"L{layer}H{head}"}
                | {k: _r(result.scores[k][layer, head], 3) for k in ATTENTION_KINDS}
                | {"label": result.labels[layer][head]}
                for layer in range(result.n_layers) for head in range(result.n_heads)]
        return meta, rows
    raise TypeError(f"no interp snapshot for {type(result).__name__}")


SNAPSHOT_TYPES = (LensResult, PatchingResult, PatchscopeResult, SteeringResult, AttentionResult)


# Tolerances are set for float32; a half-precision run (or snapshot) widens them. Measured on
# the SmolLM2 example suite against its float32 snapshots: bfloat16 moved probabilities by up
# to 3.5x and logits by 2.5x the float32 tolerances; float16 stayed within them.
DTYPE_TOLERANCE_SCALE = {"float32": 1.0, "float16": 2.0, "bfloat16": 4.0}


def dtype_scale(*dtypes: str | None) -> float:
    """The tolerance factor for comparing results computed in these dtypes (the coarsest)."""
    return max(DTYPE_TOLERANCE_SCALE.get(d or "float32", 1.0) for d in dtypes)


def render(result: Any, dtype: str = "float32") -> str:
    """The stored text of a result; ``dtype`` (when not float32) is kept in the metadata."""
    meta, rows = summarize(result)
    if dtype != "float32":
        meta["dtype"] = dtype
    lines = [f"{HEADER}: {meta['kind']} of {meta['model']}",
             json.dumps(meta, ensure_ascii=False)]
    lines += [json.dumps(row, ensure_ascii=False) for row in rows]
    return "\n".join(lines)


class SnapshotFormatError(ValueError):
    """A stored snapshot that is not a readable pytest-interp snapshot, at ``line`` (1 is
    the header line)."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(f"line {line}: {problem}")
        self.line, self.problem = line, problem


def parse(text: str) -> tuple[dict, list[dict]]:
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


# What each kind stores: key -> type check, for the metadata line and for each row.
def _str(x: object) -> bool:
    return isinstance(x, str)


def _int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _number(x: object) -> bool:
    """A finite number, or None (what NaN is stored as)."""
    return x is None or (isinstance(x, int | float) and not isinstance(x, bool)
                         and math.isfinite(x))


def _opt_str(x: object) -> bool:
    return x is None or isinstance(x, str)


def _strs(x: object) -> bool:
    return isinstance(x, list) and all(isinstance(t, str) for t in x)


def _nums(x: object) -> bool:
    return isinstance(x, list) and all(_number(v) for v in x)


def _top(x: object) -> bool:
    """[[token, probability], ...]"""
    return isinstance(x, list) and all(
        isinstance(e, list) and len(e) == 2 and _str(e[0]) and _number(e[1]) and e[1] is not None
        for e in x)


_SCHEMA: dict[str, tuple[dict, dict]] = {
    "lens": ({"lens": _str, "prompt": _str, "tokens": _strs,
              "positions": lambda x: isinstance(x, list) and all(_int(p) for p in x)},
             {"layer": _int, "position": _int, "top": _top}),
    "patching": ({"site": _str, "clean": _str, "corrupted": _str, "answer": _str, "foil": _str,
                  "tokens": _strs, "clean_logit_diff": _number, "corrupted_logit_diff": _number},
                 {"layer": _int}),
    "patchscope": ({"source": _str, "source_position": _int, "target": _str,
                    "target_position": _int, "expected": _opt_str},
                   {"layers": _str, "text": _str}),
    "steering": ({"prompt": _str, "layer": _int, "site": _str, "target": _opt_str,
                  "foil": _opt_str, "baseline": _number, "baseline_top": _top,
                  "baseline_text": _opt_str},
                 {"coef": lambda x: _number(x) and x is not None, "value": _number, "kl": _number,
                  "top": _top}),
    "attention": ({"seed": _int, "n": _int},
                  {"head": _str, "label": _str} | {k: _number for k in ATTENTION_KINDS}),
}
_OPTIONAL_ROW = {"patchscope": {"p": _number}, "steering": {"text": _opt_str}}


def _check(meta: dict, rows: list[dict]) -> None:
    """Raise SnapshotFormatError at the first line whose keys or values are not what the kind
    stores (so comparison never meets a missing key or a wrong type)."""
    kind = meta.get("kind")
    if not isinstance(kind, str) or kind not in _SCHEMA:
        raise SnapshotFormatError(2, f"kind {kind!r} is not one of {', '.join(_SCHEMA)}")
    if "dtype" in meta and meta["dtype"] not in DTYPE_TOLERANCE_SCALE:
        raise SnapshotFormatError(2, f"dtype {_short(meta['dtype'])} is not one of "
                                     f"{', '.join(DTYPE_TOLERANCE_SCALE)}")
    if not _str(meta.get("model")):
        raise SnapshotFormatError(2, "'model' is missing or not a string")
    meta_schema, row_schema = _SCHEMA[kind]
    _check_object(2, meta, meta_schema, {})
    tokens = meta.get("tokens", [])
    for number, row in enumerate(rows, 3):
        _check_object(number, row, row_schema, _OPTIONAL_ROW.get(kind, {}))
        if kind == "lens" and not 0 <= row["position"] < len(tokens):
            raise SnapshotFormatError(number, f"position {row['position']} is outside the "
                                              f"{len(tokens)} stored tokens")
        if kind == "patching":
            columns = [k for k in ("positions", "heads", "recovery") if k in row]
            if len(columns) != 1 or not _nums(row[columns[0]]):
                raise SnapshotFormatError(number, "expected one list of recovery values: "
                                                  "'positions', 'heads' or 'recovery'")
            if "head" in row and not _int(row["head"]):
                raise SnapshotFormatError(number, "'head' is not an integer")
            if columns[0] == "positions" and len(row["positions"]) > len(tokens):
                raise SnapshotFormatError(number, f"more positions than the {len(tokens)} "
                                                  "stored tokens")


def _check_object(number: int, obj: dict, schema: dict, optional: dict) -> None:
    for key, ok in schema.items():
        if key not in obj:
            raise SnapshotFormatError(number, f"{key!r} is missing")
        if not ok(obj[key]):
            raise SnapshotFormatError(number, f"{key!r} has an unexpected value "
                                              f"{_short(obj[key])}")
    for key, ok in optional.items():
        if key in obj and not ok(obj[key]):
            raise SnapshotFormatError(number, f"{key!r} has an unexpected value "
                                              f"{_short(obj[key])}")


def _short(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def is_ours(text: object) -> bool:
    return isinstance(text, str) and text.lstrip("\n").startswith(HEADER)


# ---------------------------------------------------------------------------
# Comparison in model terms


@dataclass(frozen=True)
class Change:
    size: float  # |difference| / tolerance, or EXACT for tokens, texts and labels
    text: str


def _num(old: float | None, new: float | None, tol: float) -> float:
    """How many tolerances apart (0 when within tolerance)."""
    if old is None or new is None:
        return 0.0 if old is new else EXACT
    gap = abs(new - old)
    return gap / tol if gap > tol else 0.0


def _top_changes(where: str, old: list, new: list, tol: float) -> list[Change]:
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
        elif q is not None and _num(p, q, tol):
            out.append(Change(_num(p, q, tol), f"{where}: P({token!r}) {p:.2g} -> {q:.2g}"))
    return out


_KEYS = {"lens": ("lens", "prompt", "tokens", "positions"),
         "patching": ("site", "clean", "corrupted", "answer", "foil", "tokens"),
         "patchscope": ("source", "source_position", "target", "target_position", "expected"),
         "steering": ("prompt", "layer", "site", "positions", "target", "foil"),
         "attention": ("prompt", "seed", "n")}


def compare(old: tuple[dict, list[dict]], new: tuple[dict, list[dict]],
            tol: Tolerances) -> list[Change]:
    """Every change beyond tolerance from the stored ``old`` to the ``new`` result, largest
    first."""
    (om, orows), (nm, nrows) = old, new
    kind = om.get("kind")
    if kind != nm.get("kind") or len(orows) != len(nrows) or any(
            om.get(k) != nm.get(k) for k in _KEYS.get(kind, ())):
        what = [k for k in ("kind", *_KEYS.get(nm.get("kind"), ())) if om.get(k) != nm.get(k)]
        detail = ", ".join(f"{k} {om.get(k)!r} -> {nm.get(k)!r}" for k in what) or \
            f"{len(orows)} rows -> {len(nrows)} rows"
        return [Change(EXACT, f"a different measurement: {detail}")]
    for number, (o, n) in enumerate(zip(orows, nrows, strict=True), 1):
        if _row_shape(kind, o) != _row_shape(kind, n):
            return [Change(EXACT, f"a different measurement: row {number} is "
                                  f"{_row_shape(kind, o)} in the snapshot, {_row_shape(kind, n)} "
                                  "now")]
    changes: list[Change] = []
    if kind == "lens":
        tokens = om["tokens"]
        for o, n in zip(orows, nrows, strict=True):
            pos = o["position"]
            where = f"layer {o['layer']} pos {pos - len(tokens)} ({tokens[pos]!r})"
            changes += _top_changes(where, o["top"], n["top"], tol.prob)
    elif kind == "patching":
        for name in ("clean_logit_diff", "corrupted_logit_diff"):
            if size := _num(om[name], nm[name], tol.logit):
                old, new = _fmt(om[name], "+.3f"), _fmt(nm[name], "+.3f")
                changes.append(Change(size, f"{name.replace('_', ' ')} {old} -> {new}"))
        for o, n in zip(orows, nrows, strict=True):
            key = "positions" if "positions" in o else "heads" if "heads" in o else "recovery"
            for i, (a, b) in enumerate(zip(o[key], n[key], strict=True)):
                if size := _num(a, b, tol.recovery):
                    col = (f"pos {i} ({om['tokens'][i]!r})" if key != "heads" else f"H{i}")
                    head = f" H{o['head']}" if "head" in o else ""
                    changes.append(Change(size, f"{om['site']} L{o['layer']}{head} {col}: "
                                                f"recovery {_fmt(a)} -> {_fmt(b)}"))
    elif kind == "patchscope":
        for o, n in zip(orows, nrows, strict=True):
            if o["text"] != n["text"]:
                changes.append(Change(EXACT, f"layers {o['layers']}: {o['text']!r} -> "
                                             f"{n['text']!r}"))
            if "p" in o and (size := _num(o["p"], n.get("p"), tol.prob)):
                changes.append(Change(size, f"layers {o['layers']}: P({om['expected']!r}) "
                                            f"{_fmt(o['p'])} -> {_fmt(n.get('p'))}"))
    elif kind == "steering":
        if size := _num(om["baseline"], nm["baseline"], tol.logit):
            changes.append(Change(size, f"baseline {_fmt(om['baseline'], '.3f')} -> "
                                        f"{_fmt(nm['baseline'], '.3f')}"))
        changes += _top_changes("baseline", om["baseline_top"], nm["baseline_top"], tol.prob)
        if om.get("baseline_text") != nm.get("baseline_text"):
            changes.append(Change(EXACT, f"baseline generation {om.get('baseline_text')!r} -> "
                                         f"{nm.get('baseline_text')!r}"))
        for o, n in zip(orows, nrows, strict=True):
            where = f"coef {o['coef']:g}"
            for name in ("value", "kl"):
                if size := _num(o[name], n[name], tol.logit):
                    changes.append(Change(size, f"{where}: {name} {_fmt(o[name])} -> "
                                                f"{_fmt(n[name])}"))
            changes += _top_changes(where, o["top"], n["top"], tol.prob)
            if o.get("text") != n.get("text"):
                changes.append(Change(EXACT, f"{where}: generation {o.get('text')!r} -> "
                                             f"{n.get('text')!r}"))
    elif kind == "attention":
        for o, n in zip(orows, nrows, strict=True):
            moved = [(k, _num(o[k], n[k], tol.prob)) for k in ATTENTION_KINDS]
            moved = [(k, s) for k, s in moved if s]
            label = o["label"] != n["label"] and bool(moved)
            for k, size in moved:
                flip = f" (label {o['label']} -> {n['label']})" if label else ""
                changes.append(Change(size + (EXACT if label else 0),
                                      f"{o['head']}: {k} {_fmt(o[k])} -> {_fmt(n[k])}{flip}"))
                label = False
    return sorted(changes, key=lambda c: -c.size)


def _row_shape(kind: str, row: dict) -> str:
    """What a row measures (its layer, position, head, pair or coefficient, and how many
    values): rows are compared pairwise only when these agree."""
    if kind == "patching":
        key = next(k for k in ("positions", "heads", "recovery") if k in row)
        head = f" head {row['head']}" if "head" in row else ""
        return f"layer {row['layer']}{head}, {len(row[key])} {key}"
    names = {"lens": ("layer", "position"), "patchscope": ("layers",), "steering": ("coef",),
             "attention": ("head",)}[kind]
    return ", ".join(f"{k} {row[k]}" for k in names)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "·" if x is None else format(x, spec)


# ---------------------------------------------------------------------------
# The syrupy extension


class InterpSnapshotExtension(AmberSnapshotExtension):
    """Amber files; results stored as readable JSON lines and compared within tolerances."""

    file_extension = "interp"  # its own files: syrupy's default amber never claims them
    tolerances: ClassVar[Tolerances] = Tolerances()
    details: ClassVar[bool] = False
    dtype: ClassVar[str] = "float32"  # the run's dtype (the fixture sets the test model's)
    shown: ClassVar[int] = 10  # changes listed in a failure without --snapshot-details

    def serialize(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, SNAPSHOT_TYPES):
            return render(data, self.dtype)
        return super().serialize(data, **kwargs)

    _source: tuple[str, str] | None = None  # (file, snapshot name) last read

    def read_snapshot_data_from_location(
        self, snapshot_location: str, snapshot_name: str, session_id: str
    ) -> Any:
        """syrupy's read, with a file it cannot read turned into an "unreadable" value that
        fails the assertion naming the file and line (not a traceback, not "does not exist")."""
        from syrupy.exceptions import TaintedSnapshotError

        self._source = (snapshot_location, snapshot_name)
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
        if is_ours(serialized_data) and is_ours(snapshot_data):
            return not self._changes(serialized_data, snapshot_data)
        return super().matches(serialized_data=serialized_data, snapshot_data=snapshot_data)

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        if _is_unreadable(snapshot_data):
            yield (f"the stored snapshot cannot be read: {snapshot_data[len(_UNREADABLE):]}; fix "
                   "it by hand or re-create it with --snapshot-update")
            return
        if not (is_ours(serialized_data) and is_ours(snapshot_data)):
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        changes = self._changes(serialized_data, snapshot_data)
        meta = parse(serialized_data)[0]
        record(SnapshotDiff(f"{meta.get('kind')} of {meta.get('model')}", snapshot_data,
                            serialized_data, tuple(c.text for c in changes)))
        shown = changes if self.details else changes[: self.shown]
        try:
            dtypes = (parse(snapshot_data)[0].get("dtype"), meta.get("dtype"))
        except SnapshotFormatError:
            dtypes = (None, meta.get("dtype"))
        tolerance = _tolerance_text(self._tolerances(*dtypes))
        if dtype_scale(*dtypes) != 1:
            coarsest = max(dtypes, key=lambda d: dtype_scale(d))
            tolerance += f"; x{dtype_scale(*dtypes):g} for {coarsest}"
        yield (f"{meta.get('kind', 'result')} of {meta.get('model', '?')} changed beyond "
               f"tolerance ({tolerance}), {len(changes)} change"
               f"{'s' if len(changes) != 1 else ''}, largest first:")
        for change in shown:
            yield f"  {change.text}"
        if len(shown) < len(changes):
            yield (f"  ... {len(changes) - len(shown)} more (--snapshot-details shows all; "
                   "--snapshot-update accepts them)")
        else:
            yield "  (--snapshot-update accepts them)"


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
