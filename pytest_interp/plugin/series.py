"""plugin layer: a checkpoint series. With several ``--interp-model``, every test that uses a model
runs on each, as a session-scoped parameter (so pytest orders tests by model and each model loads
once per process), and a model is released when the next test needs another."""

from __future__ import annotations

import pytest

from ..registry import KINDS
from .collect import INTERP_MODEL
from .items import POOL_KEY, SERIES, series_spec
from .options import CONFIG_KEY
from .specs import model_ids

USES_MODEL = ("interp_model", "interp_cache")  # the fixtures that load the test's model


class Series:
    """Parametrizes the tests of a series and releases each model after its tests."""

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """Each test that uses a model (a fixture or a marker) runs on each, unless
        ``@pytest.mark.interp_model`` pins its model."""
        interp = metafunc.config.stash[CONFIG_KEY]
        if len(interp.specs) < 2 or metafunc.definition.get_closest_marker(INTERP_MODEL.name):
            return
        names = set(KINDS.names())
        if not (any(name in metafunc.fixturenames for name in USES_MODEL)
                or any(mark.name in names for mark in metafunc.definition.iter_markers())):
            return
        if SERIES not in metafunc.fixturenames:
            metafunc.fixturenames.append(SERIES)
        metafunc.parametrize(SERIES, interp.specs, ids=model_ids(interp.specs),
                             scope="session")

    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Release a series model when the next test runs on another one (tests are ordered
        by model, so it is not needed again in this process)."""
        spec, following = series_spec(item), series_spec(nextitem)
        if spec is not None and following is not None and following != spec \
                and spec != item.config.stash[CONFIG_KEY].baseline:
            item.config.stash[POOL_KEY].release(spec)
