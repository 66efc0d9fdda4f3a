"""top layer: bisect a checkpoint series: the first model on which the selected tests fail (or
pass).

    python -m pytest_interp bisect --models ckpt/step_* -- example_suites/induction_checkpoints

Given models in order (as ``--interp-model`` orders them: as given, a glob's matches by
trailing number) whose last one fails, runs one pytest session per probe, each in its own
process with ``--interp-model=MODEL`` and the arguments after ``--``, and prints each probe and
the answer: ceil(log2 N) + 1 sessions at most. ``--find pass`` finds the first model that
passes instead (when did the induction head form?). The sessions write no HTML report (an ini
``interp_report`` included) unless ``--report PATH`` asks for one: each session rewrites it, so
it ends as the last session's.

With ``--results FILE...`` instead of ``--models`` it runs no session: the results files of a
whole series (``--interp-results``, one session's or its shards') already hold each model's
outcome, and the answer is read from them (``--select`` keeps the tests whose id contains
it, as ``-k`` would have).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import InterpError
from .plugin import model_ids, ordered

Outcome = Literal["pass", "fail"]
VERB = {"pass": "passes", "fail": "fails"}


@dataclass(frozen=True)
class Probe:
    """One session: the model, its outcome and pytest's summary line."""

    spec: str
    outcome: Outcome
    summary: str


class BisectUsage(Exception):
    """Bad input to bisect: one line, exit 2."""


class BisectError(Exception):
    """The series cannot be bisected (a session errored, or the last model does not end the
    search): the message says why."""


def run_session(spec: str, pytest_args: Sequence[str], report: str = "") -> Probe:
    """Run pytest on ``spec`` in a new process, writing the HTML report to ``report`` (""
    for none, whatever the ini says); exit 0 passes, 1 fails, anything else is an error
    naming the exit code and the session's last lines."""
    command = [sys.executable, "-m", "pytest", f"--interp-model={spec}", "-q",
               "-p", "no:cacheprovider", f"--interp-report={report}", *pytest_args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = [line.strip("= ") for line in done.stdout.splitlines() if line.strip("= ")]
    summary = lines[-1] if lines else ""
    if done.returncode not in (0, 1):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise BisectError(f"the session on {spec} ended with exit code {done.returncode} (not "
                          f"a pass or a failure):\n{tail}")
    return Probe(spec, "pass" if done.returncode == 0 else "fail", summary)


def bisect(specs: Sequence[str], find: Outcome, session: Callable[[str], Probe],
           say: Callable[[str], None]) -> tuple[str, list[Probe]]:
    """The first of ``specs`` whose outcome is ``find``, assuming outcomes flip once along
    the series; the last model is run first and must have that outcome."""
    ids = model_ids(tuple(specs))
    budget = math.ceil(math.log2(len(specs))) + 1
    probes: list[Probe] = []

    def probe(index: int) -> bool:
        result = session(specs[index])
        probes.append(result)
        say(f"bisect: [{len(probes)}/{budget}] {ids[index]}: {VERB[result.outcome]} "
            f"({result.summary})")
        return result.outcome == find

    say(f"bisect: {len(specs)} models, {ids[0]} ... {ids[-1]}: the first that {VERB[find]}, in "
        f"at most {budget} sessions")
    if not probe(len(specs) - 1):
        raise BisectError(f"the last model, {specs[-1]}, does not {find}: nothing to bisect "
                          f"(bisect looks for the first model that {VERB[find]}; the last "
                          "must)")
    low, high = 0, len(specs) - 1  # specs[high] has the outcome looked for
    while low < high:
        middle = (low + high) // 2
        if probe(middle):
            high = middle
        else:
            low = middle + 1
    if high == 0:
        say(f"bisect: the first model, {specs[0]}, already {VERB[find]}")
    else:
        other = VERB["pass" if find == "fail" else "fail"]
        say(f"bisect: first model that {VERB[find]}: {specs[high]} ({ids[high - 1]} {other}); "
            f"{len(probes)} sessions")
    return specs[high], probes


def from_results(paths: Sequence[Path], find: Outcome, select: str,
                 say: Callable[[str], None]) -> str:
    """The first model whose selected tests have outcome ``find`` in the results files (a
    model fails when one of its tests fails, is INCONCLUSIVE or drifted), from no session."""
    from .merge import expanded, read

    try:
        merged = read(expanded(list(paths)))
    except FileNotFoundError as exc:
        raise BisectUsage(str(exc)) from None
    if not merged.sessions:
        raise BisectUsage("no readable results file: " + "; ".join(merged.problems))
    order = max((s.get("models") or [] for s in merged.sessions), key=len)
    failing: dict[str, bool] = {}
    for row in merged.rows:
        model = (row.get("record") or {}).get("model")
        if row.get("when") == "call" and model and select in row["nodeid"]:
            failing[model] = failing.get(model, False) or row["outcome"] in (
                "failed", "inconclusive", "drift")
    if select and not failing:
        raise BisectUsage(f"--select {select!r} matches no test of a model in the results "
                          "files: give part of a test id, e.g. --select test_induction")
    if merged.unfinished:
        raise BisectError(merged.unfinished[0])
    missing = [m for m in order if m not in failing]
    if len(order) < 2 or missing:
        raise BisectError(f"the results files hold no selected test of {', '.join(missing)}: "
                          f"give every shard's file (a series of {len(order)} models)"
                          if missing else "the results files hold one model: nothing to bisect")
    outcomes = ["fail" if failing[m] else "pass" for m in order]
    say(f"bisect: {len(order)} models in {len(merged.sessions)} results files, {order[0]} ... "
        f"{order[-1]}: the first that {VERB[find]} (no session run)")
    say("bisect: " + ", ".join(f"{m} {VERB[o]}" for m, o in zip(order, outcomes, strict=True)))
    if outcomes[-1] != find:
        raise BisectError(f"the last model, {order[-1]}, does not {find}: nothing to bisect")
    first = next(i for i, o in enumerate(outcomes) if o == find)
    if any(o != find for o in outcomes[first:]):
        raise BisectError(f"the outcome flips more than once along the series: "
                          f"{order[first]} {VERB[find]}, a later model does not")
    other = VERB["pass" if find == "fail" else "fail"]
    say(f"bisect: first model that {VERB[find]}: {order[first]}"
        + (f" ({order[first - 1]} {other})" if first else " (the first model)"))
    return order[first]


HELP = "find the first model of an ordered series on which the selected tests fail (or pass)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``bisect``'s options (pytest's follow ``--``)."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--models", nargs="+", metavar="SPEC",
                        help="models in the order given (a glob's matches sort by trailing "
                             "number)")
    source.add_argument("--results", nargs="+", metavar="FILE", type=Path,
                        help="read the outcomes from these results files of the whole "
                             "series (--interp-results; one session's or every shard's) "
                             "instead of running sessions")
    parser.add_argument("--select", default="", metavar="TEXT",
                        help="with --results: only the tests whose id contains TEXT")
    parser.add_argument("--find", choices=("fail", "pass"), default="fail",
                        help="the outcome to find the first model of (default fail)")
    parser.add_argument("--report", metavar="PATH", default="",
                        help="write each session's HTML report there (the last one stays); "
                             "default none, whatever the suite's ini says")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_interp bisect ARGS`` (the old spelling)."""
    from .cli import main as cli

    return cli(["bisect", *(sys.argv[1:] if argv is None else argv)])


def run(options: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``bisect --models M... [--find fail|pass] -- PYTEST ARGS``; exit 0 when found."""
    pytest_args = options.pytest_args
    if options.results:
        if pytest_args or options.report:
            parser.error("--results reads the outcomes and runs no session: pytest arguments "
                         "and --report go with --models")
        try:
            from_results(options.results, options.find, options.select, print)
        except BisectUsage as exc:
            print(f"bisect: {exc}", file=sys.stderr)
            return 2
        except BisectError as exc:
            print(f"bisect: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        specs = ordered(options.models)
    except InterpError as exc:
        print(f"bisect: {exc}", file=sys.stderr)
        return 2
    if len(specs) < 2:
        parser.error(f"--models names {len(specs)} model: bisect needs at least 2")
    report = str(Path(options.report).resolve()) if options.report else ""
    try:
        bisect(specs, options.find, lambda spec: run_session(spec, pytest_args, report), print)
    except BisectError as exc:
        print(f"bisect: {exc}", file=sys.stderr)
        return 1
    return 0
