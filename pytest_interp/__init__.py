"""pytest-interp: regression tests of what language models do inside.

The public API: ``dataset`` (a marker's check over a dataset, from a test body; ``datasets``
for a sweep of them sharing forward passes),
``load_hf`` (the transformers model behind a model spec, to fine-tune), ``InterpError`` (the
one-line error everything raises), and the base classes for a kind of your own
(``Expectation``, ``ExpectationKind``, ``SnapshotCodec``, ``Change``, ``Tolerances``; the
whole kind-writing API is ``pytest_interp.extend``). The fixtures and markers come with the
pytest plugin (``pytest_interp.plugin``); the probes' arguments are their spec dataclasses
(``pytest_interp.probes.*``). Other modules are internal.
"""

from __future__ import annotations

from typing import Any

from .codec import Change, SnapshotCodec, Tolerances
from .dataset_expectation import dataset, datasets
from .errors import InterpError
from .expectation import Expectation, ExpectationKind

__all__ = ["Change", "Expectation", "ExpectationKind", "InterpError", "SnapshotCodec",
           "Tolerances", "dataset", "datasets", "load_hf"]


def load_hf(spec: str, *, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, tokenizer)``: the transformers causal LM and tokenizer behind a model spec
    (an alias such as ``smollm2-135m`` or ``tiny-random-llama``, a local directory, a
    ``.gguf`` file or a hub id), as ``--interp-model`` loads it: eval mode, eager attention,
    but with gradients on, to fine-tune (call ``model.train()``). A fresh copy each call."""
    from . import checks
    from .backends.loading import load_hf as load
    from .backends.specs import resolve_spec
    from .settings import DTYPES

    checks.choice("dtype", dtype, DTYPES)
    loaded = load(resolve_spec(spec), device=device, dtype=dtype)
    loaded.model.requires_grad_(True)
    return loaded.model, loaded.tokenizer
