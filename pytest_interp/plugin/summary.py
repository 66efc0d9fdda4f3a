"""plugin layer: summaries on the controller: the Markdown step summary for CI pages
(``GITHUB_STEP_SUMMARY``), and the terminal's: INCONCLUSIVE and DRIFT sections, vacuous tests,
near-ties, diffs within their drift budget, the report's path, each model's work."""

from __future__ import annotations

from typing import Any

import pytest

from ..report.summary import SummaryRow, markdown
from .channel import decode, row_record, test_row
from .items import POOL_KEY
from .options import CONFIG_KEY
from .report import REPORT_KEY
from .specs import model_ids


class StepSummary:
    """Each test's outcome, measured values and snapshot changes; at the end, a Markdown
    summary appended to ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rows: dict[str, SummaryRow] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = test_row(report)
        if row is not None:
            self.add(row)

    def add(self, result: dict[str, Any]) -> None:
        """One results row (``channel.test_row``) into its test's summary row."""
        row = self.rows.setdefault(result["nodeid"], SummaryRow(result["nodeid"]))
        row.outcome = result["outcome"]
        record = row_record(result)
        if record is not None:
            row.measured += record.measured
            row.changes += record.changes
            row.model = record.model

    def write(self, title: str, ids: list[str]) -> None:
        """Append the Markdown summary (a series' ``ids`` as a grid)."""
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(markdown(list(self.rows.values()), title,
                               models=ids if len(ids) > 1 else None))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        interp = session.config.stash[CONFIG_KEY]
        ids = model_ids(interp.specs)
        title = f"{', '.join(ids) or 'no model'} via {interp.backend}"
        if interp.baseline:
            title += f", against baseline {interp.baseline}"
        self.write(title, ids)


class TerminalSummary:
    """What the session's end prints for pytest-interp."""

    def __init__(self) -> None:
        self.noise: list[str] = []  # near-ties, per snapshot
        self.within: list[str] = []  # snapshot diffs within their drift budget
        self.vacuous: list[str] = []  # node ids of passing tests with a vacuous marker

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            record = decode(report)
            self.noise += record.noise
            self.within += record.within
            if record.vacuous and report.passed:
                self.vacuous.append(report.nodeid)

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        write = terminalreporter.write_line
        for status in ("inconclusive", "drift"):
            _section(terminalreporter, status)
        if self.vacuous:
            write(f"interp: {len(self.vacuous)} vacuous test{_s(self.vacuous)} (also pass on a "
                  "re-initialised model):", yellow=True)
            for nodeid in self.vacuous:
                write(f"  VACUOUS {nodeid}")
        if self.noise:
            details = bool(getattr(config.option, "include_snapshot_details", False))
            write(f"interp: {len(self.noise)} snapshot{_s(self.noise)} passed with near-ties "
                  "(noise, not failures)" + (":" if details else "; --snapshot-details lists "
                                                                 "them"))
            for line in self.noise if details else ():
                write(f"  ~ {line}")
        if self.within:
            write(f"interp: {len(self.within)} snapshot{_s(self.within)} moved beyond the noise "
                  "floor, within the drift budget (passed; the report shows the diffs):")
            for line in self.within:
                write(f"  ~ {line}")
        report = config.stash.get(REPORT_KEY, None)
        if report is not None:
            write(f"interp: report written to {report.path}")
        pool = config.stash.get(POOL_KEY, None)
        for model in pool.seen() if pool is not None else ():
            info, stats = model.info, model.memo.stats
            variant = model.request.perturbation if model.request is not None else None
            write(f"interp: {info.name} rev {info.revision} ({info.architecture}, "
                  f"{info.n_layers} layers) via {info.backend}"
                  + (", re-initialised control (--interp-controls)" if variant == "reinit" else
                     f", {variant} variant for noise floors" if variant else "")
                  + f": {stats.passes} forward pass{'es' if stats.passes != 1 else ''}, "
                  + f"{stats.reused} result{'s' if stats.reused != 1 else ''} reused, "
                  + (f"{stats.split} batch{'es' if stats.split != 1 else ''} split to stay "
                     f"within --interp-memory, " if stats.split else "")
                  + ("released after its tests" if model.closed
                     else f"{model.memo.nbytes / 1024**2:.1f} MiB held"))


def _s(items: list[str]) -> str:
    return "s" if len(items) != 1 else ""


def _section(terminalreporter: Any, status: str) -> None:
    """An INCONCLUSIVE or DRIFT section, like FAILURES: pytest lists only its own
    categories."""
    reports = [r for r in terminalreporter.stats.get(status, ())
               if getattr(r, "when", None) == "call"]
    if not reports:
        return
    terminalreporter.write_sep("=", status.upper(), yellow=True)
    for report in reports:
        terminalreporter.write_sep("_", report.head_line or report.nodeid, yellow=True)
        for name, body in report.sections:
            if name.startswith(f"interp: {status}"):
                terminalreporter.write_line(body)
