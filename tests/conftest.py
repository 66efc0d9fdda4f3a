"""Shared fixtures: each backend and raw HF model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

from pytest_interp.backends.loading import cache_dir

# pytester points HOME at a temporary directory; keep every session on the one conversion
# cache so the GGUF file is de-quantized once, not once per inner session.
os.environ["PYTEST_INTERP_CACHE_DIR"] = str(cache_dir())

SPECS = ("tiny-random-llama", "tiny-random-gpt2", "smollm2-135m")
BACKENDS = ("transformer_lens", "nnsight")


@pytest.fixture(scope="session")
def load_backend():
    """``load_backend(spec, backend)``: a cached Backend (each with its own HF instance)."""
    from pytest_interp.model import load_backend as load
    from pytest_interp.settings import ModelRequest

    cache = {}

    def get(spec: str, backend: str = "transformer_lens", **kwargs):
        key = (spec, backend, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = load(ModelRequest(spec, backend, **kwargs))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def load_raw_hf():
    """``load_raw_hf(spec)``: a plain HF model instance no adapter has touched."""
    from pytest_interp.backends.loading import load_hf, resolve_spec

    cache = {}

    def get(spec: str):
        if spec not in cache:
            cache[spec] = load_hf(resolve_spec(spec))
        return cache[spec]

    return get


@pytest.fixture(scope="module")
def smollm2(load_backend):
    """SmolLM2 through the TransformerLens adapter, with a fresh memo per module."""
    from pytest_interp.model import InterpModel

    return InterpModel(load_backend("smollm2-135m", "transformer_lens"))


@pytest.fixture(scope="module")
def smollm2_nnsight(load_backend):
    """SmolLM2 through the nnsight adapter, with a fresh memo per module."""
    from pytest_interp.model import InterpModel

    return InterpModel(load_backend("smollm2-135m", "nnsight"))
