"""plugin layer: results as data (``--interp-results PATH``): the session's header, then each
test's outcome and record (measured values with their intervals, figures, snapshot changes,
timings) as one JSON line, written and flushed as it finishes, so a run that dies keeps what
it wrote; an ``end`` line last. ``pytest-interp merge`` renders the HTML report and the step
summary from any set of such files (``pytest_interp.merge``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import pytest

from .channel import test_row
from .options import CONFIG_KEY
from .session import header
from .shards import ORDER
from .specs import model_ids

SCHEMA = "pytest-interp-results/1"
"""The versioned schema every line names: rows ``session`` (first), ``test``, ``end``."""


class ResultsFile:
    """Writes the session's results, a JSON line at a time, to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.start = time.perf_counter()
        self.out: IO[str] | None = None

    def _write(self, row: dict[str, Any]) -> None:
        if self.out is not None:
            self.out.write(json.dumps({"schema": SCHEMA, **row}, ensure_ascii=False) + "\n")
            self.out.flush()

    def _start(self, session: pytest.Session) -> None:
        interp = session.config.stash[CONFIG_KEY]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(self.path, "w", encoding="utf-8")  # closed at the session.s end
        self._write({"type": "session", "header": header(session.config),
                     "models": model_ids(interp.specs), "specs": list(interp.specs),
                     "backend": interp.backend, "baseline": interp.baseline,
                     "shard": interp.shard, "started": time.time()})

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._start(session)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        row = test_row(report)
        if row is not None:
            order = getattr(report, ORDER, None)  # set where the test ran (an xdist worker)
            self._write(row if order is None else {**row, "order": order})

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self._write({"type": "end", "exitstatus": int(exitstatus),
                     "collected": session.testscollected,
                     "seconds": time.perf_counter() - self.start})
        if self.out is not None:
            self.out.close()
            self.out = None
