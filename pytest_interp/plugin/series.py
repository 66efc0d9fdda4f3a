"""plugin layer: a checkpoint series. With several ``--interp-model``, every test that uses a model
runs on each, as a session-scoped parameter (so pytest orders tests by model and each model loads
once per process), and a model is released when the next test needs another. Under xdist the
tests of one model go to one worker (``ModelScheduling``), so each model loads once in all."""

from __future__ import annotations

from typing import Any

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

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """In a series, xdist schedules whole models: each worker holds one at a time."""
        specs = config.stash[CONFIG_KEY].specs
        if len(specs) < 2:
            return None
        from xdist.scheduler import LoadScopeScheduling

        ids = model_ids(specs)

        class ModelScheduling(LoadScopeScheduling):
            """xdist's scope scheduling with a test's scope = its series model."""

            def _split_scope(self, nodeid: str) -> str:
                return scope_of(nodeid, ids)

        return ModelScheduling(config, log)

    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: pytest.Item | None) -> None:
        """Release a series model when the next test runs on another one (tests are ordered
        by model, so it is not needed again in this process)."""
        spec, following = series_spec(item), series_spec(nextitem)
        if spec is not None and following is not None and following != spec \
                and spec != item.config.stash[CONFIG_KEY].baseline:
            item.config.stash[POOL_KEY].release(spec)


def scope_of(nodeid: str, ids: list[str]) -> str:
    """The series model a test id runs on (one of ``ids`` among its parameters), else its
    module: xdist's unit of work."""
    params = nodeid.rpartition("[")[2].rstrip("]").split("-") if nodeid.endswith("]") else []
    joined = "-".join(params)
    for model in sorted(ids, key=len, reverse=True):  # the longest id that fits
        if joined == model or joined.endswith(f"-{model}") or joined.startswith(f"{model}-") \
                or f"-{model}-" in joined:
            return f"model:{model}"
    return nodeid.split("::", 1)[0]
