"""top layer: hooks pytest-interp offers to conftest files and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .registry import KindRegistry
    from .settings import ModelRequest


@pytest.hookspec(historic=True)
def pytest_interp_register_kinds(registry: KindRegistry) -> None:
    """Add expectation kinds: call ``registry.register(kind)`` for each ``ExpectationKind``.

    Called once per session for every plugin and conftest, including those loaded later;
    the kinds' markers are registered with pytest and removed when the session ends.
    """


@pytest.hookspec(firstresult=True)
def pytest_interp_load_model(spec: str, request: ModelRequest) -> object | None:
    """Supply the model for ``spec`` yourself (return None to leave it to pytest-interp).

    Return ``(model, tokenizer)`` (a transformers causal LM and its tokenizer), a
    TransformerLens ``TransformerBridge`` or an nnsight ``LanguageModel``. Called once per
    model request (spec, backend, device, dtype) per session and worker. The transformer_lens
    backend rewrites the modules of a model it is given: return a fresh model for each
    request when both backends run.
    """
