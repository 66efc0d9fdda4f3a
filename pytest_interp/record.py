"""results layer: results produced while a test runs, for the HTML report (no torch)."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .codec import EXACT
from .storage import size

# result -> (the model that computed it, its recipe: a function of a model giving the same
# result); snapshots re-run the recipe on variants of the model to measure noise floors
ORIGINS: weakref.WeakKeyDictionary[Any, tuple[Any, Callable[[Any], Any]]] = \
    weakref.WeakKeyDictionary()


def remember_origin(result: Any, model: Any, recipe: Callable[[Any], Any]) -> None:
    """Note which model computed ``result`` and how (results without weak references are
    simply not noted)."""
    with contextlib.suppress(TypeError):
        ORIGINS[result] = (model, recipe)


def derived(new: Any, old: Any, transform: Callable[[Any], Any]) -> Any:
    """``new`` = ``transform(old)``: its origin is old's, with the transform applied."""
    origin = ORIGINS.get(old)
    if origin is not None:
        model, recipe = origin
        remember_origin(new, model, lambda m: transform(recipe(m)))
    return new

_current: list[Any] | None = None


@dataclass(frozen=True)
class SnapshotDiff:
    """A snapshot that moved beyond its noise floor: the stored (or baseline) and the new
    text, the changes in model terms, and the drift (the largest change, in noise floors)
    against its budget: within it the test passes and the diff is shown."""

    name: str
    old: str
    new: str
    changes: tuple[str, ...]
    lines: tuple[str, ...] = ()  # the failure text as the terminal shows it
    drift: float = float("inf")
    budget: float = 1.0

    @property
    def within(self) -> bool:
        """Whether the drift is within the budget (the snapshot passes, its diff shown)."""
        return self.drift <= self.budget

    @property
    def measurement(self) -> bool:
        """Whether the measurement itself changed (prompt, tokenizer, rows): never drift."""
        return self.drift >= EXACT


@dataclass(frozen=True)
class BatchSplit:
    """A batch of ``wanted`` rows run in passes of ``rows`` to stay within the memory budget
    (``--interp-memory``, ``budget`` bytes)."""

    wanted: int
    rows: int
    budget: int

    @property
    def note(self) -> str:
        return (f"{self.wanted} rows ran in passes of {self.rows} to stay within "
                f"--interp-memory ({size(self.budget)})")


@dataclass(frozen=True)
class SnapshotChecked:
    """A snapshot (or baseline) comparison a test made, and its drift in noise floors (0:
    within the noise floor)."""

    name: str
    drift: float


@dataclass(frozen=True)
class SnapshotNoise:
    """Differences from a stored snapshot that the rules call noise (near-ties)."""

    name: str
    changes: tuple[str, ...]


def record(item: Any) -> Any:
    """Remember ``item`` for the running test's report entry; return it unchanged."""
    if _current is not None and not any(item is seen for seen in _current):
        _current.append(item)
    return item


def swap(old: Any, new: Any) -> None:
    """Show ``new`` in the running test's report entry where ``old`` was recorded."""
    if _current is not None:
        for i, seen in enumerate(_current):
            if seen is old:
                _current[i] = new
                return
        _current.append(new)


@contextmanager
def recording() -> Iterator[list[Any]]:
    """Collect what ``record`` sees inside the block."""
    global _current
    previous, _current = _current, []
    try:
        yield _current
    finally:
        _current = previous
