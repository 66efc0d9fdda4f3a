"""expect layer: a result's stored snapshot text: a header line naming the kind, model and format
version, a metadata line (with provenance, dtype and noise floors), one JSON line per row; rendered,
parsed and checked line by line (a bad line is named)."""

from __future__ import annotations

import json
from typing import Any

from ..codec import (
    SnapshotCodec,
    SnapshotFormatError,
    check_object,
    is_floor,
    is_str,
    short_json,
)
from ..record import ORIGINS
from ..registry import KINDS

HEADER = "pytest-interp snapshot v1"


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


def floors_of(text: object) -> Floors | None:
    """A stored snapshot's floors as ``render`` takes them (empty where it has none: they
    were measured and none was wider than the tolerances); None: no readable snapshot."""
    if not is_ours(text):
        return None
    try:
        meta, rows = parse(str(text))
    except SnapshotFormatError:
        return None
    return meta.get("floor") or {}, [row.get("floor") or {} for row in rows]


def has_floors(text: str) -> Any:
    """A stored snapshot's floors (metadata's, then each row's); falsy when it has none."""
    try:
        meta, rows = parse(text)
    except SnapshotFormatError:
        return None
    floors = [meta.get("floor")] + [row.get("floor") for row in rows]
    return floors if any(floors) else None


def provenance_of(result: Any) -> dict[str, str] | None:
    """What computed a result: weights and tokenizer fingerprints, backend and libraries."""
    origin = ORIGINS.get(result)
    return origin[0].provenance if origin is not None else None
