"""backends layer: a model request -> a loaded Backend (TransformerLens or nnsight adapter), from a
spec or a model object a conftest supplied, with the benign or control variants that noise floors
and --interp-controls ask for."""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

from ..errors import InterpError, ModelSpecError
from ..settings import ModelRequest

if TYPE_CHECKING:
    from .base import Backend


def use_deterministic_algorithms() -> None:
    """Make torch pick deterministic kernels (cuBLAS needs its workspace set before use).

    warn_only: an op without a deterministic kernel warns, naming itself, rather than failing
    a test that does not depend on it."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)


def load_backend(request: ModelRequest, provided: object = None) -> Backend:
    """Resolve, load and wrap a model as the requested backend; ``provided`` is a model
    object a conftest supplied for the spec (``pytest_interp_load_model``)."""
    import torch

    from .loading import from_object, load_hf, resolve_spec

    if provided is not None:
        loaded, native = from_object(request.spec, provided, request.backend)
        if request.perturbation == "reinit":
            loaded, native = dataclasses.replace(loaded, model=reinitialised(loaded.model)), None
        elif request.perturbation:
            perturb_weights(loaded.model, request.perturbation)
        if request.backend == "nnsight":
            from .nnsight import NNsightBackend

            return NNsightBackend(loaded, prepend_bos=request.prepend_bos, lm=native)
        from .transformer_lens import TransformerLensBackend

        return TransformerLensBackend(loaded, prepend_bos=request.prepend_bos, bridge=native)

    if request.remote:
        from .nnsight import NNsightBackend

        loaded = load_hf(resolve_spec(request.spec, remote=True), dtype=request.dtype,
                         weights=False)
        return NNsightBackend(loaded, prepend_bos=request.prepend_bos, remote=True)
    device: str = request.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise ModelSpecError(
            "--interp-device cuda, but torch sees no CUDA device here: "
            "use --interp-device cpu (or auto)"
        )
    if device == "cuda":
        device = worker_device(device, os.environ.get("PYTEST_XDIST_WORKER"),
                               torch.cuda.device_count())
    loaded = load_hf(resolve_spec(request.spec), device=device, dtype=request.dtype)
    if request.perturbation == "reinit":
        loaded = dataclasses.replace(loaded, model=reinitialised(loaded.model))
    elif request.perturbation:
        perturb_weights(loaded.model, request.perturbation)
    if request.backend == "nnsight":
        from .nnsight import NNsightBackend

        return NNsightBackend(loaded, prepend_bos=request.prepend_bos)
    from .transformer_lens import TransformerLensBackend

    return TransformerLensBackend(loaded, prepend_bos=request.prepend_bos)


def worker_device(device: str, worker: str | None, count: int) -> str:
    """``cuda`` under xdist on a machine with ``count`` > 1 GPUs: worker gwN takes GPU N mod
    count, so the workers of a series hold their models on devices of their own; else
    ``device`` as it is."""
    if device != "cuda" or count < 2 or not worker or not worker.startswith("gw") \
            or not worker[2:].isdigit():
        return device
    return f"cuda:{int(worker[2:]) % count}"


def reinitialised(model: Any, seed: int = 20240601) -> Any:
    """A fresh model of ``model``'s config, randomly initialised (seeded) the way transformers
    initialises it: the control for ``--interp-controls`` (it learned nothing)."""
    import torch
    from transformers import AutoModelForCausalLM

    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = AutoModelForCausalLM.from_config(model.config, torch_dtype=param.dtype)
    return fresh.to(param.device).eval()


def perturb_weights(model: Any, perturbation: str) -> None:
    """Change a loaded model's weights in place, benignly: ``"bfloat16"`` rounds every weight
    through bfloat16; ``"noise:R"`` multiplies each by (1 + R * N(0, 1)), seeded."""
    import torch

    with torch.no_grad():
        if perturbation == "bfloat16":
            for param in model.parameters():
                param.copy_(param.to(torch.bfloat16).to(param.dtype))
            return
        kind, _, value = perturbation.partition(":")
        if kind != "noise":
            raise InterpError(f"unknown perturbation {perturbation!r}: use bfloat16 or noise:R")
        generator = torch.Generator().manual_seed(0)
        for param in model.parameters():
            noise = torch.randn(param.shape, generator=generator).to(param)
            param.mul_(1 + float(value) * noise)
