"""expect layer: figures for the HTML report: each kind's own figure (from the registry), and
snapshot diffs."""

from __future__ import annotations

import difflib
from typing import Any

from ..dataset_expectation import DatasetResult
from ..record import SnapshotDiff, SnapshotNoise
from ..registry import KINDS
from .draw import esc, strip_svg


def snapshot_figure(diff: SnapshotDiff) -> str:
    """A failed snapshot: its changes, the lines that differ (``-`` stored, ``+`` new), then
    the stored and the new text side by side (long lines wrap)."""
    changes = "".join(f"<li>{esc(c)}</li>" for c in diff.changes)
    return (f"<h4>snapshot {esc(diff.name)} changed</h4><ul class='changes'>{changes}</ul>"
            f"<b>lines that differ</b><pre class='diff'>{line_diff(diff.old, diff.new)}</pre>"
            "<div class='sbs'><div><b>stored</b><pre class='old'>"
            f"{esc(diff.old)}</pre></div><div><b>new</b><pre class='new'>{esc(diff.new)}"
            "</pre></div></div>")


def line_diff(old: str, new: str) -> str:
    """The lines of ``old`` replaced or removed (``- ``) and of ``new`` in their place
    (``+ ``), each change after the other, as HTML."""
    a, b = old.splitlines(), new.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            out += [f"<span class='del'>- {esc(line)}</span>" for line in a[i1:i2]]
            out += [f"<span class='add'>+ {esc(line)}</span>" for line in b[j1:j2]]
    return "".join(out)


def noise_figure(noise: SnapshotNoise) -> str:
    """A passing snapshot's near-ties: listed, not failures."""
    items = "".join(f"<li>{esc(c)}</li>" for c in noise.changes)
    return (f"<h4>snapshot {esc(noise.name)}: near-ties (noise, not failures)</h4>"
            f"<ul class='noise'>{items}</ul>")


def dataset_figure(result: DatasetResult) -> str:
    """A dataset's per-prompt values, the bound, and the estimate with its interval."""
    est = result.estimate
    values = list(result.values)
    passed = [f is None for f in result.failures]
    if est.stat == "fraction":  # 0/1 values say little: show each row as pass/fail
        values = [float(p) for p in passed]
    title = (f"{result.kind} over {result.source}: {est} against {result.bound_text} -> "
             f"{result.verdict.value.upper()}")
    return (f"<h4>{esc(title)}</h4>" + strip_svg(values, passed, result.low, result.high,
                                                  (est.low, est.high), est.value, title))


def figure(item: Any) -> str:
    """The HTML of one recorded item ('' for anything without a figure)."""
    if isinstance(item, DatasetResult):
        return dataset_figure(item)
    if isinstance(item, SnapshotDiff):
        return snapshot_figure(item)
    if isinstance(item, SnapshotNoise):
        return noise_figure(item)
    kind = KINDS.for_result(item)
    if kind is None or kind.figure is None:
        return ""
    return kind.figure(item)
