"""plugin layer: collection reads a test's markers into frozen expectations, statically: it checks
what needs no model (names, types, ranges, files) and never loads one. A bad marker, or a near-miss
of one of ours, is a collection error naming the test."""

from __future__ import annotations

import difflib
from collections.abc import Generator
from dataclasses import replace
from typing import Any

import pytest

from ..backends.specs import resolve_spec
from ..backends.validate import validate
from ..dataset_expectation import DatasetExpectation, parse_marker
from ..errors import InterpError
from ..expectation import Marker
from ..registry import KINDS
from ..settings import ModelOverride
from .items import EXPECT_KEY, OVERRIDE_KEY, provided

INTERP_MODEL = Marker(
    "interp_model", ModelOverride,
    "run this test (class, module) on another model or backend; spec is an alias, "
    "a local HF directory or a .gguf file.",
)


class MarkerReader:
    """Binds each collected test's interp markers (``pytest.Function`` items)."""

    @pytest.hookimpl(wrapper=True)
    def pytest_pycollect_makeitem(
        self, collector: pytest.Collector, name: str, obj: object
    ) -> Generator[None, Any, Any]:
        result = yield
        items = result if isinstance(result, list) else [result]
        for item in items:
            if isinstance(item, pytest.Function):
                read_marks(item)
        return result


def read_marks(item: pytest.Function) -> None:
    """Bind each interp marker to its dataclass, in source order, into the item's stash."""
    ours = (INTERP_MODEL.name, *KINDS.names())
    registered = _registered_markers(item.config)
    for mark in item.iter_markers():
        if mark.name not in registered:
            close = difflib.get_close_matches(mark.name, ours, n=1, cutoff=0.75)
            if close:
                raise pytest.Collector.CollectError(
                    f"{item.nodeid}: @pytest.mark.{mark.name} is not a marker: did you mean "
                    f"@pytest.mark.{close[0]}?"
                )
    try:
        found = item.get_closest_marker(INTERP_MODEL.name)
        override = INTERP_MODEL.build(found.args, dict(found.kwargs)) if found else None
        if override is not None and not provided(item.config, override.spec):
            validate(resolve_spec(override.spec))
    except InterpError as exc:
        raise pytest.Collector.CollectError(
            f"{item.nodeid}: @pytest.mark.interp_model: {exc}"
        ) from None
    item.stash[OVERRIDE_KEY] = override
    expectations = []
    for mark in _in_source_order(item):
        if mark.name not in KINDS:
            continue
        kind = KINDS[mark.name]
        try:
            expectation = parse_marker(kind, mark.args, dict(mark.kwargs),
                                       item.config.rootpath)
        except InterpError as exc:
            raise pytest.Collector.CollectError(
                f"{item.nodeid}: @pytest.mark.{kind.name}: {exc}"
            ) from None
        if isinstance(expectation, DatasetExpectation) and item.config.option.verbose >= 2:
            expectation = replace(expectation, shown=None)
        expectations.append((kind, expectation))
    item.stash[EXPECT_KEY] = tuple(expectations)


def _in_source_order(item: pytest.Item) -> list[pytest.Mark]:
    """The item's marks as a reader sees them: the function's top to bottom (decorators
    apply bottom-up), then its class's, then its module's."""
    by_node: dict[int, list[pytest.Mark]] = {}
    for node, mark in item.iter_markers_with_node():
        by_node.setdefault(id(node), []).append(mark)
    return [mark for marks in by_node.values() for mark in reversed(marks)]


def _registered_markers(config: pytest.Config) -> set[str]:
    """The names of every marker registered with pytest (ini ``markers`` and plugins)."""
    return {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}


def add_marker_line(config: pytest.Config, marker: Marker) -> None:
    """Register ``marker`` with pytest (``pytest --markers`` lists its usage line)."""
    config.addinivalue_line("markers", f"{marker.call}: {marker.help}")
