"""plugin layer: the HTML report (``--interp-report``): one entry per test, filled from the call
reports' records on the controller, written when the session ends."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ..report.html import Entry, write_report
from .channel import decode, outcome
from .options import CONFIG_KEY
from .session import header
from .specs import model_ids


class HtmlReport:
    """Collects the report's entries and writes the report to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.perf_counter()
        self.entries: dict[str, Entry] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not report.failed and not report.skipped:
            return
        entry = self.entries.setdefault(report.nodeid, Entry(report.nodeid))
        entry.outcome = outcome(report)
        entry.duration += report.duration
        if entry.outcome in ("inconclusive", "drift"):
            entry.failure += "".join(text for name, text in report.sections
                                     if name.startswith(f"interp: {entry.outcome}"))
        elif report.failed or report.skipped:
            entry.failure += report.longreprtext
        if report.when == "call":
            record = decode(report)
            entry.figures += [record.figures] if record.figures else []
            entry.notes += [*record.vacuous, *record.within, *record.split]
            entry.measured += record.measured
            entry.points += record.points
            entry.model = record.model
            entry.drift = entry.drift if record.drift is None else record.drift

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        specs = session.config.stash[CONFIG_KEY].specs
        lines = header(session.config)
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            lines.append(f"INTERRUPTED: the run was stopped (Ctrl-C or SIGTERM) after "
                         f"{len(self.entries)} of {session.testscollected} tests; this "
                         "report shows those")
        write_report(self.path, list(self.entries.values()), lines,
                     time.perf_counter() - self.start,
                     models=model_ids(specs) if len(specs) > 1 else [])


REPORT_KEY = pytest.StashKey[HtmlReport]()
