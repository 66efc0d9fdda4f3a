"""expect layer: the Markdown summary for CI pages (GitHub's ``GITHUB_STEP_SUMMARY``): outcome
counts, one row per test (failed first) with what its expectations measured, and the largest
snapshot changes."""

from __future__ import annotations

from dataclasses import dataclass, field

ORDER = ("failed", "drift", "inconclusive", "passed", "skipped")  # rows by outcome, then id


def series_key(nodeid: str, model: str | None) -> str:
    """The node id without the model's id (``test_x[step_00200]`` -> ``test_x``): the same
    test on every model of a series."""
    if model is not None:
        for old, new in ((f"[{model}]", ""), (f"[{model}-", "["), (f"-{model}]", "]")):
            if old in nodeid:
                return nodeid.replace(old, new, 1)
    return nodeid


@dataclass
class SummaryRow:
    """One test: outcome, the lines its expectations measured, its snapshot changes, and
    its model's id in a series."""

    nodeid: str
    outcome: str = "passed"
    measured: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    model: str | None = None


def _rank(outcome: str) -> int:
    return ORDER.index(outcome) if outcome in ORDER else len(ORDER)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def _outcome(outcome: str) -> str:
    return outcome if outcome == "passed" else f"**{outcome.upper()}**"


def grid(rows: list[SummaryRow], models: list[str]) -> list[str]:
    """A test x model table of outcomes (the tests that ran on a series)."""
    cells: dict[str, dict[str, str]] = {}
    for row in rows:
        if row.model is not None:
            cells.setdefault(series_key(row.nodeid, row.model), {})[row.model] = row.outcome
    lines = ["| test | " + " | ".join(_cell(m) for m in models) + " |",
             "|---|" + "---|" * len(models)]
    for test, outcomes in cells.items():
        lines.append(f"| `{_cell(test)}` | " + " | ".join(
            _outcome(outcomes[m]) if m in outcomes else "" for m in models) + " |")
    return lines


def markdown(rows: list[SummaryRow], header: str, *, changes: int = 10,
             models: list[str] | None = None) -> str:
    """The summary: a heading naming the run, counts, with several ``models`` the test x
    model grid, the table, the ``changes`` largest snapshot changes (each test's first ones,
    failed tests first)."""
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.outcome] = counts.get(row.outcome, 0) + 1
    ordered = sorted(rows, key=lambda r: (_rank(r.outcome), r.nodeid))
    lines = [f"## pytest-interp: {_cell(header)}", "",
             ", ".join(f"{counts[k]} {k}" for k in sorted(counts, key=_rank)) or "no tests ran",
             ""]
    if models:
        lines += ["### Tests x models", "", *grid(rows, models), ""]
    lines += ["| test | outcome | measured |", "|---|---|---|"]
    for row in ordered:
        lines.append(f"| `{_cell(row.nodeid)}` | {_outcome(row.outcome)} | "
                     f"{'<br>'.join(_cell(m) for m in row.measured)} |")
    listed = [(row.nodeid, change) for row in ordered for change in row.changes][:changes]
    if listed:
        lines += ["", "### Largest snapshot changes", ""]
        lines += [f"- `{_cell(nodeid)}`: {_cell(change)}" for nodeid, change in listed]
    return "\n".join(lines) + "\n"
