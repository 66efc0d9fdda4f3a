"""plugin layer: how a test runs: random, numpy and torch seeded from the base seed and its node id,
its results recorded for the report, its model work under ``--interp-timeout``, and then compared
with ``--interp-baseline``."""

from __future__ import annotations

import random
import signal
import sys
import threading
import zlib
from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

import pytest

from ..record import recording
from .baseline import compare_with_baseline
from .items import RECORDED_KEY
from .options import CONFIG_KEY


class Running:
    """Seeds, records and times each test."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        seed_everything(item.config.stash[CONFIG_KEY].seed, item.nodeid, "setup")

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        interp = item.config.stash[CONFIG_KEY]
        timeout = interp.timeout
        seed_everything(interp.seed, item.nodeid, "call")
        with recording() as items:
            try:
                with _deadline(timeout):
                    result = yield
                    changed = compare_with_baseline(item, items)
            except _Timeout:
                pytest.fail(f"pytest-interp: the test ran past --interp-timeout={timeout:g}s and "
                            "was stopped: restrict the sweep (layers=, positions=) or raise the "
                            "limit", pytrace=False)
            finally:
                item.stash[RECORDED_KEY] = list(items)
        if changed:
            pytest.fail(changed, pytrace=False)
        return result


def seed_everything(seed: int, nodeid: str, phase: str) -> None:
    """Seed random, numpy and (if loaded) torch from the base seed, the test's node id and
    the phase (fixture setup, call)."""
    value = zlib.crc32(f"{seed}:{nodeid}:{phase}".encode())
    random.seed(value)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(value)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` swallows it."""


@contextmanager
def _deadline(seconds: float) -> Generator[None, None, None]:
    """Raise _Timeout in the main thread after ``seconds`` (0 = never; Unix main thread only)."""
    if not seconds or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
