"""backends layer: each head's weights read from the Hugging Face modules, for the edits that
need them (q/k/v input edits, per-head outputs); both adapters wrap one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .architectures import Layout, family_of
from .base import ModelInfo


class HFWeights:
    """BlockWeights read from the Hugging Face modules (both adapters wrap one)."""

    def __init__(self, model: Any, info: ModelInfo, w_o: Callable[[int], Tensor]) -> None:
        self._layout = family_of(info.architecture).layout
        self._blocks = _get(model, self._layout.blocks)
        self._info, self._w_o = info, w_o
        self._qkv: dict[tuple[int, str], Tensor] = {}

    def w_o(self, layer: int) -> Tensor:
        return self._w_o(layer)

    def qkv(self, layer: int, kind: str) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        layout, block = self._layout, self._blocks[layer]
        if (layer, kind) not in self._qkv:
            self._read_qkv(layer)
        norm = _get(block, layout.attn_norm) if layout.attn_norm else _identity
        return norm, self._qkv[layer, kind]

    def _read_qkv(self, layer: int) -> None:
        """Each head's q, k, v rows, as plain tensors (made outside inference mode: a
        gradient run may use them later)."""
        layout = self._layout
        attn = _get(self._blocks[layer], layout.attn)
        with torch.inference_mode(False):
            weights = [module_weight(_get(attn, path)) for path in layout.qkv]
            if layout.qkv_in_out:
                weights = [w.T for w in weights]
            index = qkv_index(layout, self._info, weights[0].shape[0])
            for k in "qkv":
                rows = weights["qkv".index(k)] if len(weights) == 3 else weights[0][index[k]]
                self._qkv[layer, k] = rows.reshape(self._info.heads_of(f"{k}_input"), -1,
                                                   rows.shape[-1])


def qkv_index(layout: Layout, info: ModelInfo, width: int) -> dict[str, Tensor]:
    """Where q, k and v lie in a fused projection's ``width`` outputs, as index tensors
    (each head's Dh outputs in turn); for separate projections, each one's outputs."""
    q_heads, kv_heads = info.n_heads, info.n_kv_heads
    if not layout.qkv_fused:
        return {k: torch.arange(width) for k in "qkv"}
    if layout.qkv_fused == "per_head":  # [H, 3, Dh]: GPT-NeoX
        dh = width // (3 * q_heads)
        grid = torch.arange(width).reshape(q_heads, 3, dh)
        return {k: grid[:, i].reshape(-1) for i, k in enumerate("qkv")}
    dh = width // (q_heads + 2 * kv_heads)  # [q | k | v]: GPT-2, Phi-3
    sizes = [q_heads * dh, kv_heads * dh, kv_heads * dh]
    return dict(zip("qkv", torch.arange(width).split(sizes), strict=True))


def module_weight(module: Any) -> Tensor:
    """A module's weight; for a module accelerate offloaded (meta device), the offloaded copy
    its hook loads before each forward."""
    weight = module.weight.detach()
    hook = getattr(module, "_hf_hook", None)
    if weight.is_meta and hook is not None and getattr(hook, "weights_map", None) is not None:
        weight = hook.weights_map["weight"].detach().to(getattr(hook, "execution_device", "cpu"))
    return weight


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


def _identity(x: Tensor) -> Tensor:
    return x
