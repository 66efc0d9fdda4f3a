"""plugin layer: after a test body passes, each expectation its markers declared is checked on the
test's model and fails on its own, naming its marker; every failure INCONCLUSIVE makes the test
INCONCLUSIVE; ``--interp-controls`` checks each passing marker again on a re-initialised model
(VACUOUS). What each measured goes to JUnit XML's properties."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Generator
from typing import Any

import pytest

from ..errors import InterpError
from ..expectation import Expectation, ExpectationKind, Inconclusive
from ..model import InterpModel
from ..record import recording
from .drift import MEASURED, against_baseline
from .items import EXPECT_KEY, MARKED_KEY, POINTS_KEY, POOL_KEY, model_for, request_for
from .options import CONFIG_KEY

VACUOUS = "interp_vacuous"  # the JUnit property of a vacuous test's note

Expectations = tuple[tuple[ExpectationKind[Any, Any], Expectation[Any]], ...]


class VacuousWarning(UserWarning):
    """A test's expectations also hold on a randomly re-initialised model."""


class InconclusiveVerdict(pytest.fail.Exception):  # type: ignore[name-defined]
    """Every failed expectation of a test was INCONCLUSIVE (none failed outright)."""


class Verdicts:
    """Checks each test's expectations after its body."""

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        result = yield
        expectations = pyfuncitem.stash.get(EXPECT_KEY, ())
        if not expectations:
            return result
        try:
            model = model_for(pyfuncitem)
        except InterpError as exc:
            message = f"pytest-interp: {exc}"
        else:
            failures = [text for kind, expectation in expectations
                        if (text := check(kind, expectation, model, pyfuncitem)) is not None]
            if not failures:
                if pyfuncitem.config.stash[CONFIG_KEY].controls:
                    _control(pyfuncitem, expectations)
                return result
            message = "\n\n".join(failures)
            if all(isinstance(text, Inconclusive) for text in failures):
                raise InconclusiveVerdict(message, pytrace=False)
        pytest.fail(message, pytrace=False)


def check(kind: ExpectationKind[Any, Any], expectation: Expectation[Any],
          model: InterpModel, item: pytest.Item | None = None) -> str | None:
    """One expectation's failure text (a model-dependent bad argument names the marker);
    with ``item``, what it measured goes to the item's properties (JUnit XML) and points
    (the report's trends)."""
    try:
        result, text = kind.check(model, expectation)
    except InterpError as exc:
        return f"@pytest.mark.{kind.name}: {exc}"
    if item is None:
        return text
    item.stash.setdefault(MARKED_KEY, []).append(result)  # its bound is its claim
    verdict = "passed" if text is None else \
        "inconclusive" if isinstance(text, Inconclusive) else "failed"
    label = expectation.label()
    named = f"{kind.name}({label})" if label else kind.name
    line = expectation.measured(result)
    if line is not None:
        item.user_properties.append((MEASURED, f"{named}: {line} ({verdict})"))
    points = item.stash.setdefault(POINTS_KEY, [])
    points.append({"kind": kind.name, "label": label, "index": len(points),
                   "verdict": verdict, **(expectation.point(result) or {})})
    drifted = against_baseline(kind, expectation, result, model, item)
    return text if drifted is None else drifted if text is None else f"{text}\n\n{drifted}"


def _control(item: pytest.Function, expectations: Expectations) -> None:
    """Check each expectation on the control model: each that passes there too is VACUOUS
    (one note naming them, with their labels)."""
    request = dataclasses.replace(request_for(item), perturbation="reinit")
    try:
        control = item.config.stash[POOL_KEY].get(request)
    except InterpError:
        return
    with recording():  # the control's results are not this test's figures
        vacuous = [f"@pytest.mark.{kind.name}" + (f"({label})" if (label := e.label()) else "")
                   for kind, e in expectations if check(kind, e, control) is None]
    if not vacuous:
        return
    one = len(vacuous) == 1
    of = "" if len(vacuous) == len(expectations) else \
        f" ({len(vacuous)} of {len(expectations)} markers)"
    note = (f"VACUOUS: {', '.join(vacuous)} also passed on a randomly re-initialised "
            f"{request.spec}{of} (--interp-controls): {'it does' if one else 'they do'} not "
            f"depend on what the model learned; tighten {'its' if one else 'their'} bounds")
    item.user_properties.append((VACUOUS, note))
    warnings.warn(VacuousWarning(note), stacklevel=1)
