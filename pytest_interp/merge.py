"""top layer: the ``merge`` command: one HTML report and one step summary from the results files
of several sessions (``--interp-results``; e.g. the shards of a CI matrix), as one session over
them all would have written them. Missing, repeated or unfinished shards, and tests found in
two files, are named in the report and on stderr, never merged silently.

    pytest-interp merge shard-*.jsonl --report report.html --step-summary summary.md
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "merge the results files of several sessions (shards) into one report"


@dataclass
class Merged:
    """What a set of results files holds: the sessions' header rows, the test rows in order,
    and what is wrong with the set."""

    sessions: list[dict[str, Any]] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # those problems: sessions cut short
    seconds: float = 0.0  # the sessions' time, summed

    def absent(self) -> list[str]:
        """The models of a series on which no test has a result (a missing shard's)."""
        models = dict.fromkeys(m for s in self.sessions for m in s["models"])
        if len(models) < 2:
            return []
        ran = {(row.get("record") or {}).get("model") for row in self.rows}
        return [m for m in models if m not in ran]


def read(paths: list[Path]) -> Merged:
    """Read results files; a file that is not one is a problem, not a crash."""
    from .plugin.results import SCHEMA

    merged = Merged()
    seen: dict[str, Path] = {}
    for path in paths:
        try:
            lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
                     if line.strip()]
        except (OSError, ValueError) as exc:
            merged.problems.append(f"{path}: not a results file ({exc})")
            continue
        if not lines or lines[0].get("schema") != SCHEMA or lines[0].get("type") != "session":
            merged.problems.append(f"{path}: not a {SCHEMA} file (its first line is no session)")
            continue
        merged.sessions.append({**lines[0], "path": str(path)})
        end, cut = lines[-1], ""
        if end.get("type") != "end":
            cut = f"{path}: the session did not finish (no end line)"
        elif end.get("exitstatus") in ENDED_EARLY:
            cut = (f"{path}: the session ended early (pytest exit status {end['exitstatus']}: "
                   f"{ENDED_EARLY[end['exitstatus']]})")
        else:
            merged.seconds += float(end.get("seconds", 0.0))
            ran = len({row["nodeid"] for row in lines if row.get("type") == "test"})
            if ran < int(end.get("collected") or 0):
                cut = (f"{path}: {end['collected'] - ran} of its {end['collected']} tests have "
                       "no result (stopped early: -x, --maxfail?)")
        if cut:
            merged.unfinished.append(f"{cut}: its remaining tests are missing")
            merged.problems.append(merged.unfinished[-1])
        for row in lines[1:]:
            if row.get("type") != "test":
                continue
            if row.get("when") == "call" and row["nodeid"] in seen \
                    and seen[row["nodeid"]] != path:
                merged.problems.append(f"{row['nodeid']} is in both {seen[row['nodeid']]} and "
                                       f"{path}: only the first is kept")
                continue
            if row.get("when") == "call":
                seen[row["nodeid"]] = path
            merged.rows.append(row)
    merged.problems += _shard_problems(merged.sessions)
    absent = merged.absent() if merged.problems else []
    if absent:
        merged.problems.append(f"no test has a result on {', '.join(absent)}")
    if merged.rows and all("order" in row for row in merged.rows):
        merged.rows.sort(key=lambda row: row["order"])  # the whole session's order
    return merged


ENDED_EARLY = {2: "interrupted, or errors during collection", 3: "internal error",
               4: "usage error"}


def expanded(paths: list[Path]) -> list[Path]:
    """The files named, a glob pattern (``shard-*.jsonl``) expanded here as a shell would
    (sorted), so the command reads the same from any shell."""
    out: list[Path] = []
    for path in paths:
        text = str(path)
        if not path.exists() and any(c in text for c in "*?["):
            found = sorted(glob.glob(text))
            if not found:
                raise FileNotFoundError(f"{text} matches no file")
            out += [Path(p) for p in found]
        else:
            out.append(path)
    return out


def _shard_problems(sessions: list[dict[str, Any]]) -> list[str]:
    """Missing and repeated shards of an I/N split."""
    shards = [s["shard"] for s in sessions if s.get("shard")]
    if not shards:
        return []
    counts = {tuple(s) for s in shards}
    totals = {n for _, n in counts}
    whole = [f"{s['path']} is a whole session, the others shards: merge the shards alone, "
             "or the whole session alone" for s in sessions if not s.get("shard")]
    if whole:
        return whole
    problems = []
    if len(totals) > 1:
        problems.append(f"the files split the suite differently: {sorted(totals)} shards")
    for n in sorted(totals):
        have = [i for i, m in (tuple(s) for s in shards) if m == n]
        missing = [i for i in range(1, n + 1) if i not in have]
        problems += [f"shard {i}/{n} is missing" for i in missing]
        problems += [f"shard {i}/{n} is given {have.count(i)} times"
                     for i in sorted(set(have)) if have.count(i) > 1]
    return problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, help="results files (--interp-results)")
    parser.add_argument("--report", type=Path, default=None, help="write the HTML report here")
    parser.add_argument("--junitxml", type=Path, default=None,
                        help="write one JUnit XML file here (each test's measured values as "
                             "properties)")
    parser.add_argument("--step-summary", type=Path, default=None,
                        help="append the Markdown step summary here (default: "
                             "$GITHUB_STEP_SUMMARY when set)")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Merge; 0 when the set is whole and every test passed, 1 when a test failed or was
    INCONCLUSIVE, 3 when the set of files is not whole (missing, repeated or unfinished)."""
    from .plugin.report import HtmlReport
    from .plugin.summary import StepSummary

    try:
        merged = read(expanded(args.files))
    except FileNotFoundError as exc:
        parser.error(str(exc))
    if not merged.sessions:
        parser.error("no readable results file: " + "; ".join(merged.problems))
    for problem in merged.problems:
        print(f"merge: {problem}", file=sys.stderr)
    written = []
    first = merged.sessions[0]
    models = list(dict.fromkeys(m for s in merged.sessions for m in s["models"]))
    every = list(dict.fromkeys(m for s in merged.sessions for m in s.get("specs", [])))
    ids = models if len(every) > 1 else []
    if args.report is not None:
        report = HtmlReport(args.report)
        for row in merged.rows:
            report.add(row)
        n = len(merged.sessions)
        lines = [*first["header"], f"interp: merged from {n} results "
                 f"file{'s' if n > 1 else ''}: "
                 f"{', '.join(Path(s['path']).name for s in merged.sessions)}",
                 *(f"MERGE PROBLEM: {p}" for p in merged.problems)]
        report.write(lines, ids, merged.seconds)
        written.append(f"report {args.report}")
    target = args.step_summary or os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        summary = StepSummary(str(target))
        for row in merged.rows:
            summary.add(row)
        title = f"{', '.join(models) or 'no model'} via {first['backend']}"
        if first.get("baseline"):
            title += f", against baseline {first['baseline']}"
        if merged.problems:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            with open(target, "a", encoding="utf-8") as out:
                out.write("".join(f"> **merge problem:** {p}\n>\n" for p in merged.problems)
                          + "\n")
        summary.write(title, models)
        written.append(f"step summary {target}")
    if args.junitxml is not None:
        junit(merged, args.junitxml)
        written.append(f"JUnit XML {args.junitxml}")
    if written:
        print(f"merge: wrote {', '.join(written)}", file=sys.stderr)
    if merged.problems:
        return 3
    return 1 if any(r["outcome"] in ("failed", "inconclusive") for r in merged.rows) else 0


def junit(merged: Merged, path: Path) -> None:
    """One JUnit XML file of the merged tests: a testcase per test (its calls' and failed
    setups' time), a failure, error or skipped element as pytest writes them, and its measured
    values and our own verdict as properties."""
    import xml.etree.ElementTree as ET

    from .plugin.outcomes import VERDICT
    from .plugin.verdicts import MEASURED

    cases: dict[str, ET.Element] = {}
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for row in merged.rows:
        nodeid = row["nodeid"]
        if nodeid not in cases:
            module, _, name = nodeid.partition("::")
            classname = module.removesuffix(".py").replace("/", ".")
            if "::" in name:
                cls, _, name = name.rpartition("::")
                classname += f".{cls.replace('::', '.')}"
            cases[nodeid] = ET.Element("testcase", classname=classname, name=name, time="0")
            counts["tests"] += 1
        case = cases[nodeid]
        case.set("time", f"{float(case.get('time', '0')) + row['duration']:.3f}")
        outcome, when = row["outcome"], row["when"]
        if outcome == "skipped":
            ET.SubElement(case, "skipped", message=row["failure"].splitlines()[-1:][0]
                          if row["failure"] else "")
            counts["skipped"] += 1
        elif outcome in ("failed", "inconclusive") and when == "call":
            ET.SubElement(case, "failure", message=row.get("message") or outcome
                          ).text = row["failure"]
            counts["failures"] += 1
        elif outcome == "failed":
            ET.SubElement(case, "error", message=row.get("message") or f"error at {when}"
                          ).text = row["failure"]
            counts["errors"] += 1
        record = row.get("record")
        if isinstance(record, dict):
            props = ET.SubElement(case, "properties")
            for value in record.get("measured", []):
                ET.SubElement(props, "property", name=MEASURED, value=value)
            if record.get("verdict"):
                ET.SubElement(props, "property", name=VERDICT, value=record["verdict"])
    if merged.problems:  # a CI's test view shows the set is not whole
        case = ET.Element("testcase", classname="pytest-interp", name="merge", time="0")
        ET.SubElement(case, "error", message=merged.problems[0]).text = \
            "\n".join(merged.problems)
        cases["pytest-interp merge"] = case
        counts["tests"] += 1
        counts["errors"] += 1
    suite = ET.Element("testsuite", {"name": "pytest-interp (merged)",
                                     **{k: str(v) for k, v in counts.items()}})
    suite.extend(cases.values())
    root = ET.Element("testsuites")
    root.append(suite)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
