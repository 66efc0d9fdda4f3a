"""Helpers for the pytester tests of the plugin surface."""

from __future__ import annotations

import pytest

DATASET_USAGE = ", prompts=None, stat='mean', confidence=0.95, min_fraction=None, " \
    "interval='percentile')"
"""How every expectation marker's usage line ends: the dataset arguments."""


def ini(pytester: pytest.Pytester, **settings: str) -> None:
    """Write a pytest.ini with ``interp_<key> = value`` lines."""
    lines = "\n".join(f"interp_{k} = {v}" for k, v in settings.items())
    pytester.makeini(f"[pytest]\n{lines}\n")


def _marked_test(pytester: pytest.Pytester, marker: str) -> None:
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.{marker}
        def test_x():
            pass
    """)


def assert_collection_error(pytester: pytest.Pytester, marker: str, message: str) -> None:
    """A test decorated with ``@pytest.mark.<marker>`` fails collection with ``message``
    (what needs no model is checked when the marker is read)."""
    _marked_test(pytester, marker)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    name = marker.split("(")[0]
    result.stdout.fnmatch_lines(["*ERROR collecting test_m.py*",
                                 f"test_m.py::test_x: @pytest.mark.{name}: {message}"])


def assert_fails_when_run(pytester: pytest.Pytester, marker: str, message: str) -> None:
    """A test decorated with ``@pytest.mark.<marker>`` is collected, and fails alone with
    ``message`` when it runs (what needs the model is checked then)."""
    _marked_test(pytester, marker)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    name = marker.split("(")[0]
    result.stdout.fnmatch_lines([f"@pytest.mark.{name}: {message}"])
    assert "Traceback" not in result.stdout.str()
