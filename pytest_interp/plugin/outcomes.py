"""plugin layer: a test's call report: INCONCLUSIVE and DRIFT as outcomes of their own
(``--interp-inconclusive``, ``--interp-drift``), failed snapshots' diffs shown whole, and the test's
record for the report and summaries (``channel``)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

from ..record import BatchSplit, SnapshotChecked, SnapshotDiff, SnapshotNoise
from ..settings import Inconclusives
from .channel import TestRecord, encode
from .items import MARKED_KEY, POINTS_KEY, RECORDED_KEY, SNAPSHOTTED_KEY, series_id
from .options import CONFIG_KEY, report_path
from .verdicts import MEASURED, VACUOUS, InconclusiveVerdict

VERDICT = "interp_verdict"  # the JUnit property naming our own outcome
DRIFTED = "interp_drift"  # the JUnit property of a DRIFT test's drift


class Outcomes:
    """Makes each call report: our outcomes, the whole diffs, the record."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        if call.when != "call":
            return report
        interp = item.config.stash[CONFIG_KEY]
        record = TestRecord(model=series_id(item))
        if call.excinfo is not None and isinstance(call.excinfo.value, InconclusiveVerdict):
            _inconclusive(report, str(call.excinfo.value.msg), interp.inconclusive)
            record.verdict = "inconclusive"
        recorded = item.stash.get(RECORDED_KEY, [])
        for key in (RECORDED_KEY, MARKED_KEY, SNAPSHOTTED_KEY):  # items live all session;
            if key in item.stash:                               # results hold arrays
                del item.stash[key]
        _drifts(item, report, recorded, record)
        if record.verdict is not None:  # JUnit XML writes the item's (teardown's) properties
            report.user_properties.append((VERDICT, record.verdict))
            item.user_properties.append((VERDICT, record.verdict))
        longrepr: Any = report.longrepr
        diffs = [d for d in recorded if isinstance(d, SnapshotDiff)]
        if report.failed and hasattr(longrepr, "addsection"):
            for diff in diffs:  # pytest truncates assertion text; these are shown whole
                if not diff.within and diff.lines \
                        and "\n".join(diff.lines) not in report.longreprtext:
                    longrepr.addsection(f"interp: {diff.name} changed", "\n".join(diff.lines))
        record.changes = [f"{d.name}: {change}" for d in diffs for change in d.changes[:3]]
        record.noise = [f"{item.nodeid} {n.name}: " + "; ".join(n.changes)
                        for n in recorded if isinstance(n, SnapshotNoise)]
        record.measured = [str(v) for k, v in report.user_properties if k == MEASURED]
        record.vacuous = [str(v) for k, v in report.user_properties if k == VACUOUS]
        record.split = [s.note for s in recorded if isinstance(s, BatchSplit)]
        if report_path(item.config) is not None or report_path(item.config, "results"):
            from ..report.figures import figure  # for the report, now or merged later

            record.points = item.stash.get(POINTS_KEY, [])
            record.figures = "".join(figure(x) for x in recorded)
        encode(report, record)
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(
        self, report: pytest.TestReport, config: pytest.Config
    ) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
        """INCONCLUSIVE and DRIFT are statuses of their own: word, letter, summary count."""
        if report.when != "call":
            return None
        verdict = dict(report.user_properties).get(VERDICT)
        if verdict == "inconclusive":
            return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
        if verdict == "drift":
            return "drift", "D", ("DRIFT", {"yellow": True})
        return None


def _drifts(item: pytest.Item, report: pytest.TestReport, recorded: list[Any],
            record: TestRecord) -> None:
    """The snapshots' drift: the largest (for the report's grid and trend), the diffs within
    budget (shown, not failed), and, with --interp-drift=report, a passing test with one
    over its budget marked DRIFT."""
    interp = item.config.stash[CONFIG_KEY]
    checked = [c.drift for c in recorded if isinstance(c, SnapshotChecked)]
    diffs = [d for d in recorded if isinstance(d, SnapshotDiff)]
    if not checked:
        return
    record.drift = drift = float(f"{max(checked):.4g}")
    budget = max((d.budget for d in diffs), default=interp.max_drift)
    over = [d for d in diffs if not d.within and not d.measurement]
    verdict = "failed" if report.failed else "drift" if over else "passed"
    item.stash.setdefault(POINTS_KEY, []).append(
        {"kind": "snapshot", "label": "", "verdict": verdict, "name": "drift (noise floors)",
         "value": min(drift, 1e6), "low": None, "high": budget})
    record.within = [f"{item.nodeid}: {d.name}, drift {d.drift:.3g} noise floors (budget "
                     f"{d.budget:g})" for d in diffs if d.within]
    if report.passed and over and interp.drift == "report":
        record.verdict = "drift"
        item.user_properties.append((DRIFTED, f"{drift:.4g}"))  # JUnit XML
        report.sections.append(("interp: drift (reported by --interp-drift=report)",
                                "\n\n".join("\n".join(d.lines) for d in over)))


def _inconclusive(report: pytest.TestReport, message: str, policy: Inconclusives) -> None:
    """Give an INCONCLUSIVE report the outcome ``--interp-inconclusive`` says."""
    report.sections.append((f"interp: inconclusive ({policy}ed by --interp-inconclusive)"
                            if policy != "fail" else "interp: inconclusive", message))
    if policy == "pass":
        report.outcome = "passed"
        report.longrepr = None
    elif policy == "skip":
        path, lineno, _ = report.location
        report.outcome = "skipped"
        report.longrepr = (str(path), (lineno or 0) + 1, f"Skipped: {message.splitlines()[0]}")
