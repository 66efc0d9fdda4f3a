"""Results produced while a test runs, for the HTML report (no torch)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_current: list[Any] | None = None


@dataclass(frozen=True)
class SnapshotDiff:
    """A failed snapshot: the stored and the new text, and the changes in model terms."""

    name: str
    old: str
    new: str
    changes: tuple[str, ...]


def record(item: Any) -> Any:
    """Remember ``item`` for the running test's report entry; return it unchanged."""
    if _current is not None and not any(item is seen for seen in _current):
        _current.append(item)
    return item


@contextmanager
def recording() -> Iterator[list[Any]]:
    """Collect what ``record`` sees inside the block."""
    global _current
    previous, _current = _current, []
    try:
        yield _current
    finally:
        _current = previous
