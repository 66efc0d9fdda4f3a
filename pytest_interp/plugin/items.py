"""plugin layer: what a test item carries, kept in its stash (its model override, its expectations,
what it recorded), and how an item finds its model: the session's, its series model's, or its
``interp_model`` marker's."""

from __future__ import annotations

from typing import Any

import pytest

from ..errors import InterpError
from ..expectation import Expectation
from ..model import InterpModel
from ..pool import ModelPool
from ..registry import AnyKind
from ..settings import ModelOverride, ModelRequest
from .options import CONFIG_KEY
from .specs import model_ids

POOL_KEY = pytest.StashKey[ModelPool]()
OVERRIDE_KEY = pytest.StashKey[ModelOverride | None]()  # the interp_model marker, if any
EXPECT_KEY = pytest.StashKey[tuple[tuple[AnyKind, Expectation[Any]], ...]]()
RECORDED_KEY = pytest.StashKey[list[object]]()  # results a test produced, for the report
MARKED_KEY = pytest.StashKey[list[Any]]()  # the results a test's markers checked
SNAPSHOTTED_KEY = pytest.StashKey[list[Any]]()  # results a snapshot compared with the baseline
POINTS_KEY = pytest.StashKey[list[dict[str, Any]]]()  # each expectation's kind, verdict, value

SERIES = "interp_series_model"  # the parameter naming a test's model when several are given


def series_spec(item: pytest.Item | None) -> str | None:
    """The model this test was parametrized with (several ``--interp-model``), if any."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(SERIES) if callspec is not None else None


def series_id(item: pytest.Item) -> str | None:
    """The id of this test's model in a series (``step_00200``), if any."""
    spec = series_spec(item)
    if spec is None:
        return None
    specs = item.config.stash[CONFIG_KEY].specs
    return model_ids(specs)[specs.index(spec)]


def request_for(item: pytest.Item) -> ModelRequest:
    """The model this test runs on (raises "no model given" when none is configured)."""
    return item.config.stash[CONFIG_KEY].request(item.stash.get(OVERRIDE_KEY, None),
                                                 series_spec(item))


def model_for(item: pytest.Item) -> InterpModel:
    return item.config.stash[POOL_KEY].get(request_for(item))


def provided(config: pytest.Config, spec: str) -> bool:
    """Whether a conftest or plugin may supply ``spec`` (pytest_interp_load_model): then
    its checks wait for the test that needs the model."""
    from ..backends.specs import resolve_spec

    if not config.hook.pytest_interp_load_model.get_hookimpls():
        return False
    try:
        resolve_spec(spec)
    except InterpError:
        return True
    return False
