"""The self-contained HTML report: one section per test, its status, failure text and figures."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from pathlib import Path

STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px} h3{margin:0 0 6px} h4{margin:14px 0 4px;font-size:13px}
section{border:1px solid #ddd;border-left:6px solid #aaa;padding:10px 14px;margin:12px 0}
section.passed{border-left-color:#3a9d4a} section.failed{border-left-color:#d0453a}
section.skipped{border-left-color:#c9a227}
section.inconclusive{border-left-color:#e08a1e} p.note{color:#8a5a00}
.status{font-weight:bold;text-transform:uppercase}
pre{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}
pre.failure{background:#fff1f0} .sbs{display:flex;gap:12px} .sbs>div{flex:1;min-width:0}
pre.old{background:#fff1f0} pre.new{background:#f0fff2}
table.ps{border-collapse:collapse;font-size:12px} table.ps td,table.ps th{border:1px solid #ddd;
padding:2px 6px} .heads{display:flex;flex-wrap:wrap;gap:6px} figure.head{margin:0;text-align:center;
font-size:10px} figure.head img{border:1px solid #ccc;image-rendering:pixelated}
figure.induction figcaption,figure.previous_token figcaption{font-weight:bold;color:#1d4fa0}
"""


@dataclass
class Entry:
    nodeid: str
    outcome: str = "passed"
    duration: float = 0.0
    failure: str = ""
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. VACUOUS (--interp-controls)


def write_report(path: Path, entries: list[Entry], header: list[str], wall: float) -> None:
    """Write the report to ``path`` (parents created)."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.outcome] = counts.get(entry.outcome, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    sections = []
    for entry in entries:
        failure = (f"<pre class='failure'>{html.escape(entry.failure)}</pre>"
                   if entry.failure else "")
        failure += "".join(f"<p class='note'><b>{html.escape(note)}</b></p>"
                           for note in entry.notes)
        sections.append(
            f"<section class='{entry.outcome}' id='{html.escape(entry.nodeid, quote=True)}'>"
            f"<h3><span class='status'>{entry.outcome}</span> {html.escape(entry.nodeid)} "
            f"<small>({entry.duration:.2f}s)</small></h3>{failure}{''.join(entry.figures)}"
            "</section>")
    lines = "".join(f"<div>{html.escape(line)}</div>" for line in header)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<title>pytest-interp report</title>"
        f"<style>{STYLE}</style></head><body><h1>pytest-interp report</h1>{lines}"
        f"<p>{html.escape(summary)} in {wall:.1f}s, written "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>{''.join(sections)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
