"""plugin layer: the HTML report (``--interp-report``): one entry per test, filled from the call
reports' records on the controller, written when the session ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from ..report.html import Entry, write_report
from .channel import row_record, test_row
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
        row = test_row(report)
        if row is not None:
            self.add(row)

    def add(self, row: dict[str, Any]) -> None:
        """One results row (``channel.test_row``) into its test's entry."""
        entry = self.entries.setdefault(row["nodeid"], Entry(row["nodeid"]))
        entry.outcome = row["outcome"]
        entry.duration += row["duration"]
        entry.failure += row["failure"]
        record = row_record(row)
        if record is not None:
            entry.figures += [record.figures] if record.figures else []
            entry.notes += [*record.vacuous, *record.within, *record.split]
            entry.measured += record.measured
            entry.points += record.points
            entry.model = record.model
            entry.drift = entry.drift if record.drift is None else record.drift

    def write(self, lines: list[str], models: list[str], seconds: float) -> None:
        """The report, with the session's header ``lines`` (a series' ``models`` as a grid)."""
        write_report(self.path, list(self.entries.values()), lines, seconds, models=models)

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        specs = session.config.stash[CONFIG_KEY].specs
        lines = header(session.config)
        if exitstatus == pytest.ExitCode.INTERRUPTED:
            lines.append(f"INTERRUPTED: the run was stopped (Ctrl-C or SIGTERM) after "
                         f"{len(self.entries)} of {session.testscollected} tests; this "
                         "report shows those")
        self.write(lines, model_ids(specs) if len(specs) > 1 else [],
                   time.perf_counter() - self.start)


REPORT_KEY = pytest.StashKey[HtmlReport]()
