"""model layer: what a model remembers: its memoised runs (an LRU bounded by bytes), the counts of
work done and reused, and a read-only view of one run's activations."""

from __future__ import annotations

import ctypes
import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from .settings import DEFAULT_MEMO_BYTES
from .sites import Site

if TYPE_CHECKING:
    from torch import Tensor

    from .backends.base import Backend, ModelInfo, Run, Tokens
    from .sites import Site


@dataclass
class MemoStats:
    """A model's work: its run memo's ``hits``, ``misses`` and ``evictions``; the forward
    ``passes`` computed (memoised or not, each generation step one); the probe ``results``
    served again by ``InterpModel.remember``; the batches ``split`` into smaller passes to
    stay within the memory budget."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    passes: int = 0
    results: int = 0
    split: int = 0

    @property
    def reused(self) -> int:
        """Runs and probe results taken from the memo instead of computed again."""
        return self.hits + self.results


@cache
def map_large_blocks() -> bool:
    """On glibc, serve blocks of 1 MiB and more by mmap and unmap them when freed (a fixed
    M_MMAP_THRESHOLD), unless MALLOC_MMAP_THRESHOLD_ is set: a memo that keeps some runs and
    evicts others otherwise fragments the heap, which then holds up to 1.6x what the memo does
    (benchmarks/soak.py). Whether it was set."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
        return bool(libc.mallopt(-3, 1 << 20))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


def size_of(value: Any) -> int:
    """The bytes of the arrays and tensors a result holds in its fields (and in lists, tuples
    and dicts there, one level down), plus 1 KiB for the rest."""
    if is_dataclass(value):
        parts = [getattr(value, f.name) for f in fields(value)]
    else:
        parts = list(vars(value).values()) if hasattr(value, "__dict__") else [value]
    total = 1024
    for part in parts:
        inner = (part.values() if isinstance(part, dict)
                 else part if isinstance(part, list | tuple) else [part])
        total += sum(x.nbytes for x in inner if isinstance(getattr(x, "nbytes", None), int))
    return total


@dataclass
class RunMemo:
    """LRU memo of runs keyed by (token ids, edits) and of probe results keyed by their
    arguments, bounded together by the bytes they hold."""

    max_bytes: int = DEFAULT_MEMO_BYTES
    stats: MemoStats = field(default_factory=MemoStats)
    _runs: OrderedDict[tuple[Any, ...], Run] = field(default_factory=OrderedDict)
    _results: OrderedDict[Hashable, tuple[Any, int]] = field(default_factory=OrderedDict)
    _bytes: int = 0

    def __post_init__(self) -> None:
        map_large_blocks()

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, key: tuple[Any, ...], read: Collection[Site]) -> Run | None:
        run = self._runs.get(key)
        if run is None or not all(site in run.acts for site in read):
            return None
        self._runs.move_to_end(key)
        self.stats.hits += 1
        return run

    def sites(self, key: tuple[Any, ...]) -> set[Site]:
        run = self._runs.get(key)
        return set(run.acts) if run is not None else set()

    def put(self, key: tuple[Any, ...], run: Run) -> None:
        self.stats.misses += 1
        if key in self._runs:
            self._bytes -= self._runs.pop(key).nbytes()
        size = run.nbytes()
        if size > self.max_bytes:
            return  # larger than the whole budget: returned to the caller, never kept
        self._runs[key] = run
        self._bytes += size
        self._evict()

    def result(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The result memoised under ``key``, else ``compute()`` (then memoised)."""
        if key in self._results:
            self._results.move_to_end(key)
            self.stats.results += 1
            return self._results[key][0]
        value = compute()
        size = size_of(value)
        if size <= self.max_bytes:
            self._results[key] = (value, size)
            self._bytes += size
            self._evict()
        return value

    def _evict(self) -> None:
        """Drop the least recently used runs, then results, until within the budget."""
        while self._bytes > self.max_bytes and self._runs:
            _, old = self._runs.popitem(last=False)
            self._bytes -= old.nbytes()
            self.stats.evictions += 1
        while self._bytes > self.max_bytes and self._results:
            _, (_, size) = self._results.popitem(last=False)
            self._bytes -= size
            self.stats.evictions += 1

    def clear(self) -> None:
        self._runs.clear()
        self._results.clear()
        self._bytes = 0


class ActivationCache(Mapping["Site", "Tensor"]):
    """Read-only view of one memoised run: ``cache["resid_pre", 3]`` or ``cache[Site(3, ...)]``.

    Tensors keep the batch dimension (TransformerLens's convention) and are copies, so
    changing one never changes the memo.
    """

    def __init__(self, run: Run, info: ModelInfo) -> None:
        self._run = run
        self._info = info

    def _site(self, key: object) -> Site:
        if isinstance(key, Site):
            return key
        if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], str):
            return Site(self._info.check_layer(key[1]), key[0])  # type: ignore[arg-type]
        raise KeyError(f"use cache[component, layer] or cache[Site(layer, component)], not {key!r}")

    def __getitem__(self, key: object) -> Tensor:
        site = self._site(key)
        if site not in self._run.acts:
            raise KeyError(f"{site} was not recorded for this prompt")
        return self._run.acts[site].clone()

    def __iter__(self) -> Iterator[Site]:
        return iter(sorted(self._run.acts))

    def __len__(self) -> int:
        return len(self._run.acts)

    @property
    def logits(self) -> Tensor:
        """[1, P, V]"""
        return self._run.logits.clone()

    @property
    def tokens(self) -> Tokens:
        return self._run.tokens

    @property
    def str_tokens(self) -> tuple[str, ...]:
        return self._run.tokens.strs[0]


class Counted:
    """A backend whose forward passes (``run`` calls) count in ``stats.passes``."""

    def __init__(self, backend: Backend, stats: MemoStats) -> None:
        self._backend, self._stats = backend, stats

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def run(self, *args: Any, **kwargs: Any) -> Run:
        self._stats.passes += 1
        return self._backend.run(*args, **kwargs)
