"""model layer: the session's models: one InterpModel per distinct request (spec, backend, device,
dtype, variant), loaded on first use and released when a series moves on."""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InterpError
from .model import InterpModel
from .settings import DEFAULT_MEMO_BYTES, ModelRequest

Provider = Callable[[ModelRequest], object]


@dataclass
class ModelPool:
    """One InterpModel per distinct request for the whole session (per xdist worker).

    ``provide(request)`` returns a model object for the request, or None to load its spec
    (the plugin asks the ``pytest_interp_load_model`` hook)."""

    memory_bytes: int = DEFAULT_MEMO_BYTES
    deterministic: bool = True
    provide: Provider | None = None
    root: Path | None = None  # where relative files named in tests are found (the rootdir)
    _models: dict[ModelRequest, InterpModel] = field(default_factory=dict)
    _failures: dict[ModelRequest, InterpError] = field(default_factory=dict)
    _released: list[InterpModel] = field(default_factory=list)

    def get(self, request: ModelRequest) -> InterpModel:
        if request in self._failures:
            raise self._failures[request]
        if request not in self._models:
            from .backends.load import load_backend, use_deterministic_algorithms  # torch

            if self.deterministic:
                use_deterministic_algorithms()
            try:
                provided = self.provide(request) if self.provide is not None else None
                backend = load_backend(request, provided)
            except InterpError as exc:
                self._failures[request] = exc
                raise
            self._models[request] = InterpModel(
                backend, request=request, memory_bytes=self.memory_bytes, root=self.root
            )
        return self._models[request]

    def loaded(self) -> list[InterpModel]:
        return list(self._models.values())

    def release(self, spec: str) -> None:
        """Close every model loaded from ``spec`` (its variants too): a checkpoint series
        holds about one model at a time. Asked for again, it loads again."""
        for request in [r for r in self._models if r.spec == spec]:
            model = self._models.pop(request)
            model.close()
            self._released.append(model)
        gc.collect()

    def seen(self) -> list[InterpModel]:
        """Every model of the session: the released ones, then the loaded ones."""
        return [*self._released, *self._models.values()]
