"""base layer: static checks of files that markers name (no torch): they exist and have the right
form."""

from __future__ import annotations

from pathlib import Path

from .errors import InterpError

LENS_CONFIG_FILE = "config.json"
LENS_PARAMS_FILE = "params.pt"
VECTOR_SUFFIXES = (".pt", ".npy", ".safetensors")


def check_lens_folder(path: str | Path) -> Path:
    """A tuned-lens folder: config.json and params.pt side by side."""
    folder = Path(path)
    if not (folder / LENS_CONFIG_FILE).is_file() or not (folder / LENS_PARAMS_FILE).is_file():
        raise InterpError(
            f"tuned lens {str(path)!r} needs {LENS_CONFIG_FILE} and {LENS_PARAMS_FILE} in one "
            "folder: train one with `pytest-interp lens train --model SPEC --text "
            "FILE --out DIR`"
        )
    return folder


def check_vector_file(path: str | Path) -> Path:
    """A steering vector file: an existing .pt, .npy or .safetensors file."""
    file = Path(path)
    if file.suffix not in VECTOR_SUFFIXES:
        raise InterpError(
            f"steering vector file {str(path)!r} is not {', '.join(VECTOR_SUFFIXES)}: save the "
            "vector with torch.save, numpy.save or safetensors"
        )
    if not file.is_file():
        raise InterpError(f"steering vector file {str(path)!r} does not exist: check the path")
    return file
