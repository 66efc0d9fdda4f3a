"""plugin layer: ``--interp-shard=I/N``: this session runs one of N shards of the suite, as a CI
matrix job. Whole models of a series go to one shard each (so a shard loads only its models);
without a series, whole test files. Groups are assigned deterministically, largest first to
the least-loaded shard; the rest is deselected. A group's cost is the seconds its tests took
in a previous results file (``--interp-shard-durations``), else its number of tests, times
the model's weights (in millions, from a local folder's safetensors headers) in a series."""

from __future__ import annotations

import json
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from .items import series_spec
from .options import CONFIG_KEY, report_path


def assign(costs: dict[str, float], n: int) -> dict[str, int]:
    """Group -> shard (1..n): largest first, each to the least-loaded shard (ties: the lower
    shard; equal costs keep the groups' order)."""
    loads = [0.0] * n
    out = {}
    for name in sorted(costs, key=lambda g: -costs[g]):  # stable: equal costs keep order
        shard = min(range(n), key=lambda s: (loads[s], s))
        out[name] = shard + 1
        loads[shard] += costs[name]
    return out


def past_durations(path: Path | None) -> dict[str, float]:
    """Test id -> seconds its phases took, from a previous results file (empty: none given;
    a usage error for a file that is not one)."""
    if path is None:
        return {}
    if not path.is_file():
        raise pytest.UsageError(f"--interp-shard-durations {path}: no such file: give the "
                                "results file (--interp-results) of an earlier run")
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("type") == "test":
            out[row["nodeid"]] = out.get(row["nodeid"], 0.0) + float(row["duration"])
    if not out:
        raise pytest.UsageError(f"--interp-shard-durations {path} holds no test's duration: "
                                "give the results file (--interp-results) of an earlier run")
    return out


def weights_millions(spec: str) -> float:
    """A model's weights in millions, from a local folder's safetensors headers (1: unknown)."""
    from ..backends.memory import safetensors_elements

    folder = Path(spec)
    found = safetensors_elements(folder) if folder.is_dir() else None
    return max(1.0, found / 1e6) if found else 1.0


def group_of(item: pytest.Item) -> str:
    """A test's group: its model in a series, else its file."""
    spec = series_spec(item)
    return f"model:{spec}" if spec is not None else f"file:{item.path}"


NOTE_KEY = pytest.StashKey[str]()  # what this shard runs, for the terminal
WORKER_OUTPUT = "interp_shard"  # an xdist worker's [note, empty] for the controller
EMPTY_KEY = pytest.StashKey[bool]()  # this shard has no tests
DURATIONS_KEY = pytest.StashKey[dict[str, float]]()  # --interp-shard-durations, read once
ORDER_KEY = pytest.StashKey[dict[str, int]]()
"""Each test's place in the whole session's order (before shards deselect): a merge of the
shards' results files puts the tests back in it."""


ORDER = "interp_order"
"""The report attribute carrying a test's place in that order (it survives xdist)."""


class Shards:
    """Deselects the tests of the other shards; marks each report with its test's place in
    the whole session's order."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]
                                  ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        order = item.config.stash.get(ORDER_KEY, {}).get(item.nodeid)
        if order is not None:
            setattr(report, ORDER, order)
        return report

    @pytest.hookimpl(trylast=True)  # after pytest groups a series' tests by model
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        config.stash[ORDER_KEY] = {item.nodeid: i for i, item in enumerate(items)}
        shard = config.stash[CONFIG_KEY].shard
        if shard is None:
            return
        mine, n = shard
        costs: dict[str, float] = {}
        series = any(series_spec(item) is not None for item in items)
        durations = config.stash.get(DURATIONS_KEY, {})
        for item in items:
            if series and series_spec(item) is None:
                continue  # tests that use no model of the series: the first shard runs them
            cost = durations.get(item.nodeid)
            if cost is None:
                spec = series_spec(item)
                cost = 1.0 if spec is None else weights_millions(spec)
            costs[group_of(item)] = costs.get(group_of(item), 0) + cost
        shards = assign(costs, n)
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            where = shards.get(group_of(item), 1)
            (keep if where == mine else drop).append(item)
        groups = [g.removeprefix("model:").removeprefix("file:")
                  for g, i in shards.items() if i == mine]
        more = f" and {len(groups) - 8} more" if len(groups) > 8 else ""
        config.stash[EMPTY_KEY] = not keep
        config.stash[NOTE_KEY] = (
            f"interp: shard {mine}/{n} runs {len(keep)} of {len(items)} tests: "
            f"{', '.join(groups[:8])}{more}" if keep else
            f"interp: shard {mine}/{n} has no tests: the suite splits into {len(shards)} "
            f"group{'s' if len(shards) != 1 else ''} (whole models of a series, else whole "
            f"test files), fewer than {n}; an empty shard passes")
        worker = getattr(config, "workeroutput", None)  # an xdist worker: tell the controller
        if worker is not None:
            worker[WORKER_OUTPUT] = [config.stash[NOTE_KEY], not keep]
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep

    def pytest_configure(self, config: pytest.Config) -> None:
        """The durations file is read once here: a bad one is one usage error, before any
        worker starts."""
        if config.stash[CONFIG_KEY].shard is not None:
            config.stash[DURATIONS_KEY] = past_durations(report_path(config, "shard_durations"))

    def pytest_report_collectionfinish(self, config: pytest.Config) -> str | None:
        return config.stash.get(NOTE_KEY, None)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Under xdist the workers chose the tests: the controller learns what they said."""
        said = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT)
        if said and NOTE_KEY not in node.config.stash:
            node.config.stash[NOTE_KEY], node.config.stash[EMPTY_KEY] = said

    def pytest_terminal_summary(self, terminalreporter: Any, config: pytest.Config) -> None:
        if hasattr(config, "workerinput") or not hasattr(config.option, "numprocesses"):
            return
        if config.option.numprocesses and NOTE_KEY in config.stash:  # not shown at collection
            terminalreporter.write_line(config.stash[NOTE_KEY])

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """An empty shard of a CI matrix passes: its siblings ran the suite."""
        if session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED \
                and session.config.stash.get(EMPTY_KEY, False):
            session.exitstatus = pytest.ExitCode.OK
