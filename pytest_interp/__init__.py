"""pytest-interp: regression tests of what language models do inside.

What a conftest or package needs to add its own expectation kinds (see the README's
"Your own expectation kinds"): ``Expectation``, ``ExpectationKind``, ``SnapshotCodec``,
``Change`` and ``InterpError``; and ``load_hf``, the transformers model behind a model spec.
"""

from __future__ import annotations

from typing import Any

from .codec import Change, SnapshotCodec, Tolerances
from .errors import InterpError
from .expectation import Expectation, ExpectationKind

__all__ = ["Change", "Expectation", "ExpectationKind", "InterpError", "SnapshotCodec",
           "Tolerances", "load_hf"]


def load_hf(spec: str, *, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """``(model, tokenizer)``: the transformers causal LM and tokenizer behind a model spec
    (an alias such as ``smollm2-135m`` or ``tiny-random-llama``, a local directory, a
    ``.gguf`` file or a hub id), as ``--interp-model`` loads it: eval mode, eager attention,
    but with gradients on, to fine-tune (call ``model.train()``). A fresh copy each call."""
    from . import checks
    from .backends.loading import load_hf as load
    from .backends.loading import resolve_spec
    from .settings import DTYPES

    checks.choice("dtype", dtype, DTYPES)
    loaded = load(resolve_spec(spec), device=device, dtype=dtype)
    loaded.model.requires_grad_(True)
    return loaded.model, loaded.tokenizer
