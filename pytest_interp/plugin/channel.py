"""plugin layer: what a test's call report carries from the process that ran it (an xdist worker, or
this one) to the report, summaries and terminal: one typed record, one encoder, one decoder. It
travels as the report's ``interp`` attribute (pytest serialises a report's extra attributes for
xdist); JUnit XML's properties stay in ``user_properties``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pytest

ATTRIBUTE = "interp"


@dataclass
class TestRecord:
    """One test's interp facts, as its call report carries them."""

    __test__ = False  # not a test class

    model: str | None = None  # its model's id in a series
    verdict: str | None = None  # our own outcome: "inconclusive" or "drift"
    measured: list[str] = field(default_factory=list)  # each marker: label, value, verdict
    points: list[dict[str, Any]] = field(default_factory=list)  # the trend charts' values
    figures: str = ""  # the report's HTML figures
    changes: list[str] = field(default_factory=list)  # a failed snapshot's largest changes
    noise: list[str] = field(default_factory=list)  # near-ties its snapshots called noise
    within: list[str] = field(default_factory=list)  # snapshot diffs within their budget
    vacuous: list[str] = field(default_factory=list)  # --interp-controls notes
    split: list[str] = field(default_factory=list)  # batches split for --interp-memory
    drift: float | None = None  # its snapshots' largest drift, in noise floors


def encode(report: pytest.TestReport, record: TestRecord) -> None:
    """Attach ``record`` to ``report`` (plain JSON types, so it survives xdist)."""
    setattr(report, ATTRIBUTE, asdict(record))


def decode(report: pytest.TestReport | pytest.CollectReport) -> TestRecord:
    """The record a report carries (an empty one if none)."""
    data = getattr(report, ATTRIBUTE, None)
    return TestRecord(**data) if isinstance(data, dict) else TestRecord()


def test_row(report: pytest.TestReport) -> dict[str, Any] | None:
    """A report as one row of results data (``--interp-results``; what the report and the
    step summary are made of): the call of each test, and any setup or teardown that did not
    pass; None for the others."""
    if report.when != "call" and not report.failed and not report.skipped:
        return None
    status = outcome(report)
    failure = ""
    if status in ("inconclusive", "drift"):
        failure = "".join(text for name, text in report.sections
                          if name.startswith(f"interp: {status}"))
    elif report.failed or report.skipped:
        failure = report.longreprtext
    crash = getattr(report.longrepr, "reprcrash", None)
    return {"type": "test", "nodeid": report.nodeid, "when": report.when, "outcome": status,
            "duration": report.duration, "failure": failure,
            "message": crash.message if crash is not None else "",  # as JUnit XML's
            "record": asdict(decode(report)) if report.when == "call" else None}


def row_record(row: dict[str, Any]) -> TestRecord | None:
    """The record a results row carries (None: a setup or teardown row)."""
    data = row.get("record")
    return TestRecord(**data) if isinstance(data, dict) else None


def outcome(report: pytest.TestReport | pytest.CollectReport) -> str:
    """passed, failed, skipped, or our own: inconclusive, drift."""
    return decode(report).verdict or ("failed" if report.failed else report.outcome)
