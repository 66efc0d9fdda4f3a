"""The Markdown summary for CI pages (GitHub's ``GITHUB_STEP_SUMMARY``): outcome counts, one
row per test (failed first) with what its expectations measured, and the largest snapshot
changes."""

from __future__ import annotations

from dataclasses import dataclass, field

ORDER = ("failed", "inconclusive", "passed", "skipped")  # rows sorted by outcome, then id


@dataclass
class SummaryRow:
    """One test: outcome, the lines its expectations measured, its snapshot changes."""

    nodeid: str
    outcome: str = "passed"
    measured: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def _rank(outcome: str) -> int:
    return ORDER.index(outcome) if outcome in ORDER else len(ORDER)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(rows: list[SummaryRow], header: str, *, changes: int = 10) -> str:
    """The summary: a heading naming the run, counts, the table, the ``changes`` largest
    snapshot changes (each test's first ones, failed tests first)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    ordered = sorted(rows, key=lambda r: (_rank(r.outcome), r.nodeid))
    lines = [f"## pytest-interp: {_cell(header)}", "",
             ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=_rank)) or "no tests ran",
             "",
             "| test | outcome | measured |", "|---|---|---|"]
    for row in ordered:
        outcome = row.outcome if row.outcome == "passed" else f"**{row.outcome.upper()}**"
        lines.append(f"| `{_cell(row.nodeid)}` | {outcome} | "
                     f"{'<br>'.join(_cell(m) for m in row.measured)} |")
    listed = [(row.nodeid, change) for row in ordered for change in row.changes][:changes]
    if listed:
        lines += ["", "### Largest snapshot changes", ""]
        lines += [f"- `{_cell(nodeid)}`: {_cell(change)}" for nodeid, change in listed]
    return "\n".join(lines) + "\n"
