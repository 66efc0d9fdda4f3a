"""plugin layer: ``--interp-shard=I/N``: this session runs one of N shards of the suite, as a CI
matrix job. Whole models of a series go to one shard each (so a shard loads only its models);
without a series, whole test files. Groups are assigned deterministically, largest first to
the least-loaded shard; the rest is deselected. A group's cost is the seconds its tests took
in a previous results file (``--interp-shard-durations``), else its number of tests, times
the model's weights (in millions, from a local folder's safetensors headers) in a series."""

from __future__ import annotations

import json
from pathlib import Path

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
    """Test id -> seconds its phases took, from a previous results file (empty: none, or
    unreadable: then the shards fall back to counting tests)."""
    if path is None or not path.is_file():
        return {}
    out: dict[str, float] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("type") == "test":
            out[row["nodeid"]] = out.get(row["nodeid"], 0.0) + float(row["duration"])
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


ORDER_KEY = pytest.StashKey[dict[str, int]]()
"""Each test's place in the whole session's order (before shards deselect): a merge of the
shards' results files puts the tests back in it."""


class Shards:
    """Deselects the tests of the other shards."""

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
        durations = past_durations(report_path(config, "shard_durations"))
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
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
