"""plugin layer: ``--interp-baseline`` for markers whose kind compares results (circuits): each
such marker runs again on the baseline model, and its comparison adds trend points, a JUnit
property and, beyond the marker's own bound, a failure."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from ..dataset_expectation import DatasetExpectation, DatasetResult
from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind
from ..model import InterpModel
from ..record import record, recording, swap
from .items import POINTS_KEY, POOL_KEY, request_for
from .options import CONFIG_KEY

MEASURED = "interp_measured"  # the JUnit property of what an expectation measured


def against_baseline(kind: ExpectationKind[Any, Any], expectation: Expectation[Any],
                     result: Any, model: InterpModel, item: pytest.Item) -> str | None:
    """The marker's comparison with the baseline model's result, or None (no baseline, the
    test runs on the baseline itself, or the kind compares nothing); its failure text."""
    baseline = item.config.stash[CONFIG_KEY].baseline
    rows = expectation.rows if isinstance(expectation, DatasetExpectation) else (expectation,)
    if baseline is None or type(rows[0]).drift is Expectation.drift:
        return None
    request = replace(request_for(item), spec=baseline)
    if request == request_for(item):
        return None
    try:
        other = item.config.stash[POOL_KEY].get(request)
        with recording():  # the baseline's results are not this test's figures
            old = expectation.run(other)
        first = (lambda r: r.results[0]) if isinstance(result, DatasetResult) else (lambda r: r)
        found = rows[0].drift(model, first(result), first(old), rows)
    except InterpError as exc:
        return f"@pytest.mark.{kind.name}: --interp-baseline: {exc}"
    if found is None:
        return None
    if isinstance(result, DatasetResult):
        record(found.result)
    else:
        swap(result, found.result)
    label = expectation.label()
    named = f"{kind.name}({label})" if label else kind.name
    item.user_properties.append((MEASURED, f"{named}: {found.line}"))
    points = item.stash.setdefault(POINTS_KEY, [])
    for point in found.points:
        points.append({"kind": kind.name, "label": label, "index": len(points),
                       "verdict": "failed" if found.failure else "passed", **point})
    return found.failure
