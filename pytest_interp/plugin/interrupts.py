"""plugin layer: a run stopped from outside ends as pytest's Ctrl-C does. SIGTERM (what a CI
timeout or ``kill`` sends) becomes KeyboardInterrupt in the controller, so pytest prints its
summary, the report is written with the tests that finished (marked interrupted), and locks
and temporary files are released by their ``finally`` blocks instead of left behind."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

import pytest


class Interrupts:
    """Turns SIGTERM into KeyboardInterrupt while the session runs (when nothing else
    handles it), and restores the previous handler after."""

    def __init__(self) -> None:
        self.previous: Any = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            self.previous = signal.signal(signal.SIGTERM, _interrupt)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
