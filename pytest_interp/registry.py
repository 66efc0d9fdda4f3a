"""kinds layer: the one table of expectation kinds: the built-in ones, and any a conftest or package
adds.

The plugin registers markers from it, reads markers through it, and snapshots and the report
find a result's codec and figure in it. Third-party kinds come in through the
``pytest_interp_register_kinds(registry)`` hook (see ``pytest_interp.hookspecs``); outside
pytest, ``KINDS.register(kind)`` does the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .codec import SnapshotCodec
from .errors import InterpError
from .expectation import ExpectationKind

AnyKind = ExpectationKind[Any, Any]


class KindRegistry:
    """Expectation kinds by marker name, result type and stored snapshot kind."""

    def __init__(self, kinds: tuple[AnyKind, ...] = ()) -> None:
        self._kinds: dict[str, AnyKind] = {}
        self._listeners: list[Callable[[AnyKind], None]] = []
        for kind in kinds:
            self.register(kind)

    def register(self, kind: AnyKind) -> AnyKind:
        """Add a kind; its marker name, result type and codec name must be new."""
        if not isinstance(kind, ExpectationKind):
            raise InterpError(f"register an ExpectationKind, not {type(kind).__name__}")
        if kind.name in self._kinds:
            raise InterpError(f"an expectation kind named {kind.name!r} is already registered")
        for other in self._kinds.values():
            if other.result is kind.result:
                raise InterpError(f"expectation kinds {other.name!r} and {kind.name!r} both "
                                  f"produce {kind.result.__name__}: give each its own result")
            if kind.codec and other.codec and other.codec.kind == kind.codec.kind:
                raise InterpError(f"expectation kinds {other.name!r} and {kind.name!r} both "
                                  f"store snapshots as {kind.codec.kind!r}")
        self._kinds[kind.name] = kind
        for listener in self._listeners:
            listener(kind)
        return kind

    def unregister(self, name: str) -> None:
        self._kinds.pop(name, None)

    def __iter__(self) -> Iterator[AnyKind]:
        return iter(tuple(self._kinds.values()))

    def __contains__(self, name: object) -> bool:
        return name in self._kinds

    def __getitem__(self, name: str) -> AnyKind:
        return self._kinds[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._kinds)

    def for_result(self, result: object) -> AnyKind | None:
        """The kind whose probe produces results of ``result``'s type (None: no kind)."""
        for kind in self._kinds.values():
            if isinstance(result, kind.result):
                return kind
        return None

    def codec_named(self, stored: str) -> SnapshotCodec[Any] | None:
        """The codec whose snapshots are stored as kind ``stored``."""
        for kind in self._kinds.values():
            if kind.codec is not None and kind.codec.kind == stored:
                return kind.codec
        return None

    def codec_names(self) -> tuple[str, ...]:
        return tuple(k.codec.kind for k in self._kinds.values() if k.codec is not None)

    def on_register(self, listener: Callable[[AnyKind], None]) -> Callable[[], None]:
        """Call ``listener`` for each kind registered from now on; returns the undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)


def _builtin() -> tuple[AnyKind, ...]:
    from .kinds import (
        ablation,
        attention,
        circuit,
        features,
        generation,
        lens,
        logit_diff,
        next_token,
        patching,
        patchscope,
        perplexity,
        sae_fidelity,
        steering,
    )

    return (lens.KIND, logit_diff.KIND, patching.KIND, patchscope.KIND, steering.KIND,
            attention.KIND, generation.KIND, next_token.KIND, perplexity.KIND, ablation.KIND,
            features.KIND, sae_fidelity.KIND, circuit.KIND)


KINDS = KindRegistry(_builtin())
"""The session's kinds: the built-ins, then those registered through the hook."""
