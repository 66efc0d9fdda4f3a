"""expect layer: two stored results compared in model terms: every change beyond its noise floor,
largest first, its drift in noise floors against a budget, and the failure text that says what
changed (the weights, the tokenizer, or the environment)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import Any

from ..codec import (
    EXACT,
    Change,
    SnapshotFormatError,
    Tolerances,
)
from ..record import SnapshotDiff, SnapshotNoise
from ..registry import KINDS
from .stored import Floors, dtype_scale, has_floors, parse, provenance_of, render, summarize


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


@dataclass(frozen=True)
class Listing:
    """How a diff is written: every change (``details``, --snapshot-details) or the first
    ``shown``, how to ``accept`` them, and the ``drift`` (noise floors, budget)."""

    details: bool = False
    shown: int = 10
    accept: str | None = None
    drift: tuple[float, float] | None = None


@dataclass(frozen=True)
class Judging:
    """How a result is judged against a baseline: the configured ``tolerances`` (before the
    dtype scale), the drift budget ``max_drift``, and the listing's ``details``/``shown``."""

    tolerances: Tolerances = field(default_factory=Tolerances)
    max_drift: float = 1.0
    details: bool = False
    shown: int = 10


def explain(found: list[Change], subject: str, tolerances: Tolerances,
            dtypes: tuple[str | None, str | None], floored: str = "", environment: str = "",
            listing: Listing = Listing()) -> Iterator[str]:
    """A failure's text: ``subject`` beyond the noise floor, then the changes largest first
    (``shown`` of them unless ``details``), then how to accept them, then the drift (in
    noise floors) against its budget."""
    details, shown, accept, drift = listing.details, listing.shown, listing.accept, \
        listing.drift
    changes = [c for c in found if not c.noise]
    noise = [c for c in found if c.noise]
    listed = changes if details else changes[:shown]
    tolerance = tolerance_text(tolerances)
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


def against_baseline(result: Any, baseline: Any, spec: str, floors: Floors | None,
                     dtypes: tuple[str, str], judging: Judging = Judging()
                     ) -> SnapshotDiff | SnapshotNoise | None:
    """``result`` compared with ``baseline`` (the same probe on the ``--interp-baseline``
    model, with its noise ``floors``) as a snapshot written on the baseline would be: a
    SnapshotDiff of the changes beyond the floor (with their drift against the budget),
    else the near-ties, else None."""
    tolerances, max_drift = judging.tolerances, judging.max_drift
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
    floored = " and the baseline's measured floors" if has_floors(stored) else ""
    lines = explain(found, f"{meta.get('kind')} of {meta.get('model')} changed from baseline "
                           f"{spec}", tol, dtypes, floored,
                    listing=Listing(judging.details, judging.shown, drift=(drift, max_drift)))
    return SnapshotDiff(name, stored, serialized, tuple(c.text for c in real), tuple(lines),
                        drift, max_drift)


def reference_text(baseline: Any, dtype: str, floors: Floors | None) -> str:
    """The stored form of a baseline's result that a snapshot is compared with, with
    ``floors`` (a stored snapshot's, where it has as many rows)."""
    if floors is not None and len(floors[1]) != len(summarize(baseline)[1]):
        floors = None
    return render(baseline, dtype, floors, provenance_of(baseline))


def environment(stored: str, meta: dict[str, Any]) -> str:
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
    return re.fullmatch(r"[0-9a-f]{16}", fingerprint) is not None


def tolerance_text(tol: Tolerances) -> str:
    return ", ".join(f"{f.name} {getattr(tol, f.name):g}" for f in fields(tol))
