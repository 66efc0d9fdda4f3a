"""plugin layer: ``--interp-baseline``: each result a test body computed on its model, compared with
the same probe on the baseline model as a snapshot written there would be (a marker's result is
judged by its bound; a snapshot assertion compared it already)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ..errors import InterpError
from ..record import ORIGINS, SnapshotChecked, SnapshotDiff, record, recording, remember_origin
from ..snapshot import Judging, Tolerances, against_baseline, codec_for
from .fixtures import calibrator
from .items import MARKED_KEY, POOL_KEY, SNAPSHOTTED_KEY, request_for
from .options import CONFIG_KEY


def compare_with_baseline(item: pytest.Item, recorded: list[Any]) -> str | None:
    """Records the diffs, near-ties and drifts of the test's results against the baseline;
    returns the failure text of those over the drift budget (unless --interp-drift=report),
    or None."""
    config = item.config
    interp = config.stash[CONFIG_KEY]
    if interp.baseline is None:
        return None
    own = request_for(item)
    done = [*item.stash.get(MARKED_KEY, []), *item.stash.get(SNAPSHOTTED_KEY, [])]
    compared = [(result, ORIGINS[result][1]) for result in recorded
                if result in ORIGINS and codec_for(result) is not None
                and ORIGINS[result][0].request == own
                and not any(result is other for other in done)]
    if not compared:
        return None
    request = replace(own, spec=interp.baseline)
    if request == own:
        return None  # against itself: the same results, by construction
    try:
        baseline = config.stash[POOL_KEY].get(request)
    except InterpError as exc:
        return f"pytest-interp: --interp-baseline: {exc}"
    found = []
    details = bool(getattr(config.option, "include_snapshot_details", False))
    for result, recipe in compared:
        with recording():  # the baseline's results are not this test's figures
            old = recipe(baseline)
            remember_origin(old, baseline, recipe)  # the floor re-runs it on variants
            floors = calibrator(config).floors(old) if interp.noise_floor else None
        diff = against_baseline(result, old, interp.baseline, floors, (request.dtype, own.dtype),
                                Judging(Tolerances(**interp.tolerances), interp.max_drift,
                                        details))
        if diff is not None:
            record(diff)
        drift = diff.drift if isinstance(diff, SnapshotDiff) else 0.0
        record(SnapshotChecked(f"{type(result).__name__} from baseline", drift))
        found.append(diff)
    texts = ["\n".join(diff.lines) for diff in found if isinstance(diff, SnapshotDiff)
             and not diff.within and (diff.measurement or interp.drift == "fail")]
    return "\n\n".join(texts) or None
