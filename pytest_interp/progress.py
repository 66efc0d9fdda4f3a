"""base layer: progress bars for long sweeps, on the real terminal (pytest captures the test's own
output).

Shown only when stderr is a terminal and the sweep has more than one step; never in CI logs.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int, desc: str) -> Iterator[T]:
    """``items`` with a transient tqdm bar on the terminal when there are several steps."""
    stream = sys.__stderr__
    if total < 2 or stream is None or not stream.isatty():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, total=total, desc=desc, file=stream, leave=False, unit="batch")
