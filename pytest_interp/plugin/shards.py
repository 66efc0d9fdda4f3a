"""plugin layer: ``--interp-shard=I/N``: this session runs one of N shards of the suite, as a CI
matrix job. Whole models of a series go to one shard each (so a shard loads only its models);
without a series, whole test files. Groups are assigned deterministically, largest first to
the least-loaded shard, by their number of tests; the rest is deselected."""

from __future__ import annotations

import pytest

from .items import series_spec
from .options import CONFIG_KEY


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


def group_of(item: pytest.Item) -> str:
    """A test's group: its model in a series, else its file."""
    spec = series_spec(item)
    return f"model:{spec}" if spec is not None else f"file:{item.path}"


class Shards:
    """Deselects the tests of the other shards."""

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        shard = config.stash[CONFIG_KEY].shard
        if shard is None:
            return
        mine, n = shard
        costs: dict[str, float] = {}
        series = any(series_spec(item) is not None for item in items)
        for item in items:
            if series and series_spec(item) is None:
                continue  # tests that use no model of the series: the first shard runs them
            costs[group_of(item)] = costs.get(group_of(item), 0) + 1
        shards = assign(costs, n)
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            where = shards.get(group_of(item), 1)
            (keep if where == mine else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
