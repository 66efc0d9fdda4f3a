"""plugin layer: the fixtures: ``interp_model`` (the test's model), ``interp_cache`` (its memoised
activations) and ``interp_snapshot`` (syrupy's ``snapshot`` storing results as readable text,
compared within noise floors, one snapshot per test in a series)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import replace
from typing import Any

import pytest

from ..errors import InterpError
from ..memo import ActivationCache
from ..model import InterpModel
from ..record import ORIGINS, recording, remember_origin
from ..snapshot import (
    Calibrator,
    InterpSnapshotAssertion,
    InterpSnapshotExtension,
    Tolerances,
    reference_text,
    with_tolerance,
)
from .items import POOL_KEY, SNAPSHOTTED_KEY, model_for, request_for, series_id, series_spec
from .options import CONFIG_KEY


@pytest.fixture
def interp_model(request: pytest.FixtureRequest) -> InterpModel:
    """The model under test (one instance per spec/backend/device/dtype per session)."""
    try:
        return model_for(request.node)
    except InterpError as exc:
        message = f"pytest-interp: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture
def interp_cache(
    interp_model: InterpModel,
) -> Callable[..., ActivationCache]:
    """``interp_cache(prompt)``: the memoised activations of one run, read-only."""

    def cache(prompt: str, *, components: Collection[str] | None = None) -> ActivationCache:
        __tracebackhide__ = True
        return interp_model.cache(prompt, components=components)  # type: ignore[arg-type]

    return cache


@pytest.fixture
def interp_snapshot(snapshot: Any, request: pytest.FixtureRequest) -> Any:
    """syrupy's ``snapshot`` storing results as readable text, compared within tolerances
    (ini ``interp_snapshot_{prob,logit,recovery}_tol``) and diffed in model terms. A test has
    one snapshot whichever model of a series runs it; ``interp_snapshot(max_drift=N)`` lets
    one assertion drift N noise floors and pass, its diff shown."""
    config, item = request.config, request.node
    interp = config.stash[CONFIG_KEY]
    spec = series_spec(item)
    updating = bool(getattr(config.option, "update_snapshots", False))
    writes = updating and (spec is None or interp.writer is None or spec == interp.writer)
    extension = with_tolerance(InterpSnapshotExtension, **interp.tolerances)
    extension.details = bool(getattr(config.option, "include_snapshot_details", False))
    extension.max_drift, extension.report_drift = interp.max_drift, interp.drift == "report"
    extension.updating, extension.series_id = writes, series_id(item)
    if writes and interp.noise_floor:
        extension.calibrator = calibrator(config)
        extension.recalibrate = interp.calibrate
    if interp.baseline is not None and not writes:
        extension.baseline = _baseline_reference(item)
    try:
        extension.dtype = request_for(item).dtype
    except InterpError:
        pass  # no model configured: float32 tolerances
    assertion = InterpSnapshotAssertion(
        session=snapshot.session, extension_class=extension, test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
        update_new_snapshots_only=snapshot.update_new_snapshots_only)
    assertion.passive = updating and not writes  # another model of the series writes
    return assertion


def _baseline_reference(item: pytest.Item) -> Callable[[Any, Any], tuple[str, str] | None]:
    """For ``--interp-baseline``: a snapshot's result -> the same probe's result on the
    baseline as stored text (with the stored snapshot's floors, else the baseline's measured
    ones), and " from baseline SPEC"; None when there is nothing to compare."""
    config = item.config
    interp = config.stash[CONFIG_KEY]

    def reference(result: Any, floors: Any) -> tuple[str, str] | None:
        origin = ORIGINS.get(result)
        own = origin[0].request if origin is not None else None
        if origin is None or own is None or interp.baseline is None:
            return None
        request = replace(own, spec=interp.baseline)
        if request == own:
            return None  # against itself: the same results, by construction
        baseline = config.stash[POOL_KEY].get(request)
        with recording():  # the baseline's results are not this test's figures
            old = origin[1](baseline)
            remember_origin(old, baseline, origin[1])  # the floor re-runs it on variants
            if floors is None and interp.noise_floor:
                floors = calibrator(config).floors(old)
        item.stash.setdefault(SNAPSHOTTED_KEY, []).append(result)
        return reference_text(old, request.dtype, floors), f" from baseline {interp.baseline}"

    return reference


CALIBRATOR_KEY = pytest.StashKey[Calibrator]()


def calibrator(config: pytest.Config) -> Calibrator:
    """The session's noise-floor calibrator (its perturbed models load once per session)."""
    if CALIBRATOR_KEY not in config.stash:
        interp = config.stash[CONFIG_KEY]
        config.stash[CALIBRATOR_KEY] = Calibrator(
            config.stash[POOL_KEY], interp.noise_floor, interp.noise_k,
            Tolerances(**interp.tolerances))
    return config.stash[CALIBRATOR_KEY]
