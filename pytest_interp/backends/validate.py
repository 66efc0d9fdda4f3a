"""backends layer: cheap checks of a resolved spec (no torch): the files exist, parse and name a
supported architecture (config.json, a GGUF header or the hub's config.json), and safetensors files
are whole. The plugin runs them at session start: a bad spec fails at once, in one line, before any
conversion or download of weights. (The GGUF header is read by hand up to ``general.architecture``:
gguf's GGUFReader parses the whole header, 2.6 s for SmolLM2's, with no clear error for a truncated
one.)"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from ..errors import ModelSpecError
from .architectures import (
    SUPPORTED_ARCHITECTURES,
    gguf_family,
    unsupported,
)
from .hub import hub_config
from .specs import ResolvedSpec, gguf_file


def validate(resolved: ResolvedSpec, *, weights: bool = True) -> None:
    """Cheap checks (no torch): the files exist, parse and name a supported architecture
    (and, unless ``weights`` is False as for a remote model, the weights are whole). A hub
    id's config.json is read from the Hugging Face cache, or fetched alone."""
    if resolved.kind in ("tiny", "object"):
        return
    if resolved.kind == "hub":
        _check_architecture(resolved, hub_config(resolved).get("architectures") or [])
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
