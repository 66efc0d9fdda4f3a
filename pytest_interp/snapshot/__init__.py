"""expect layer: snapshots of results (syrupy): readable JSON-lines text, comparison within noise
floors, model-term diffs, drift budgets. What each kind stores and how its rows compare is its codec
(``pytest_interp.codec``), found in the registry; this package does the rest for every kind:
``stored`` (the text), ``compare`` (changes and drift), ``calibrate`` (noise floors), ``extension``
(syrupy)."""

from ..codec import Change, SnapshotFormatError, Tolerances
from .calibrate import Calibrator
from .compare import (
    Judging,
    Listing,
    against_baseline,
    compare,
    drift_line,
    explain,
    reference_text,
    weights_note,
)
from .extension import (
    InterpSnapshotAssertion,
    InterpSnapshotExtension,
    with_budget,
    with_tolerance,
)
from .stored import (
    DTYPE_TOLERANCE_SCALE,
    HEADER,
    codec_for,
    dtype_scale,
    is_ours,
    parse,
    provenance_of,
    render,
    summarize,
)

__all__ = [
    "DTYPE_TOLERANCE_SCALE",
    "HEADER",
    "Calibrator",
    "Change",
    "InterpSnapshotAssertion",
    "InterpSnapshotExtension",
    "Judging",
    "Listing",
    "SnapshotFormatError",
    "Tolerances",
    "against_baseline",
    "codec_for",
    "compare",
    "drift_line",
    "dtype_scale",
    "explain",
    "is_ours",
    "parse",
    "provenance_of",
    "reference_text",
    "render",
    "summarize",
    "weights_note",
    "with_budget",
    "with_tolerance",
]
