"""backends layer: whether a model fits before it loads. Its parameters are counted from the
weight files' headers (safetensors, GGUF), priced in the dtype it loads in, and compared with
the memory the device has available, so a model that does not fit is refused with one line
that names the options, rather than the process being killed by the kernel."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelSpecError
from ..storage import size

if TYPE_CHECKING:
    from .base import ModelInfo

BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
OVERHEAD = 1.25  # the loaded model's buffers, the tokenizer, the first runs


def row_bytes(info: ModelInfo, positions: int, logits_positions: int) -> int:
    """About what one row of ``positions`` tokens holds at a forward pass's peak: per position
    the residual stream's working set and the MLP's hidden layer (8 x d_model), a key/value
    cache of every layer (2 x n_layers x d_model) and the attention scores (heads x positions),
    plus the logits of ``logits_positions`` positions; in the model's dtype."""
    per_position = (8 + 2 * info.n_layers) * info.d_model + info.n_heads * positions
    return (positions * per_position + logits_positions * info.d_vocab) * BYTES.get(info.dtype, 4)


def rows_within(info: ModelInfo, budget: int, positions: int, cap: int,
                logits_positions: int = 1) -> int:
    """How many such rows fit in ``budget`` bytes: at least 1, at most ``cap``."""
    return max(1, min(cap, budget // row_bytes(info, positions, logits_positions)))


def safetensors_elements(directory: Path) -> int | None:
    """The number of weights in a directory's ``*.safetensors`` files (headers only), or None
    when it has none."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with file.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, tensor in header.items():
            if name != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= int(dim)
                total += count
    return total


def gguf_elements(path: Path) -> int | None:
    """The number of weights in a GGUF file (its header), or None if it cannot be read."""
    try:
        from gguf import GGUFReader

        return sum(int(t.n_elements) for t in GGUFReader(path).tensors)
    except Exception:  # an unreadable file fails when it loads, with its own message
        return None


def available(device: str) -> int | None:
    """Bytes of memory ``device`` has free now (None: not known, e.g. mps)."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    return None


def check_fits(spec: str, elements: int | None, dtype: str, device: str) -> None:
    """Refuse, in one line naming the options, a model of ``elements`` weights that would not
    fit in ``device``'s available memory in ``dtype``."""
    if elements is None:
        return
    have = available(device)
    need = int(elements * BYTES.get(dtype, 4) * OVERHEAD)
    if have is None or need <= have:
        return
    raise ModelSpecError(
        f"model spec {spec!r} has {elements / 1e6:,.0f}M weights: in {dtype} it needs about "
        f"{size(need)} of memory, and {device} has {size(have)} available: "
        "load it in less (--interp-dtype=bfloat16 halves float32), on a larger device "
        "(--interp-device=cuda, or device_map= in your pytest_interp_load_model), or run it "
        "remotely (--interp-remote)")
