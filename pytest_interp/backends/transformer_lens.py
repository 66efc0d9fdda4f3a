"""backends layer: adapter over TransformerLens 4.x ``TransformerBridge``: the only place TL hook
names live."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .architectures import family_of
from .base import (
    Edit,
    ModelInfo,
    Run,
    Site,
    Start,
    Tokens,
    check_edits,
    check_past,
    check_sites,
    split_splice,
    start_edits,
)
from .common import (
    HFTokens,
    check_context,
    contiguous_unembedding,
    model_info,
    plan_blocks,
    softcap,
)
from .loading import LoadedHF
from .splice import Splice
from .weights import HFWeights

Hook = tuple[str, Callable[[Tensor, Any], Tensor | None]]

_HOOK = {
    "resid_pre": "blocks.{}.hook_resid_pre",
    "z": "blocks.{}.attn.hook_z",
    "attn_pattern": "blocks.{}.attn.hook_pattern",
    "attn_raw": "blocks.{}.attn.hook_out",  # the attention module's output (before a post-norm)
    "attn_out": "blocks.{}.hook_attn_out",
    "resid_mid": "blocks.{}.hook_resid_mid",
    "qkv": "blocks.{}.attn.{}.hook_out",  # q, k, v projections' outputs [B, P, n, Dh]
    "mlp_input": "blocks.{}.ln2.hook_in",  # the MLP's norm's input (only the MLP reads it)
    "mlp_in": "blocks.{}.mlp.hook_in",  # the MLP module's input: after its norm
    "mlp_out": "blocks.{}.hook_mlp_out",
    "resid_post": "blocks.{}.hook_resid_post",
}


class TransformerLensBackend(HFTokens):
    """Backend over a ``TransformerBridge`` booted on a pre-loaded HF model (no download)."""

    def __init__(self, loaded: LoadedHF, *, prepend_bos: bool | None = None,
                 bridge: Any = None) -> None:
        self._tokenizer = loaded.tokenizer
        self._prepend_bos = prepend_bos
        self.bridge = bridge if bridge is not None else _boot(loaded)
        self.bridge.eval()
        contiguous_unembedding(loaded.model)
        self.info: ModelInfo = model_info(loaded, "transformer_lens")
        self._weights = HFWeights(loaded.model, self.info, self._w_o)
        self._mlp_norm = family_of(self.info.architecture).layout.mlp_norm is not None

    def run(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit | Splice] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        with torch.inference_mode(not grad), torch.set_grad_enabled(grad):
            return self._run(tokens, read, edits, start, logits_to_keep, past, keep_past, grad)

    def _run(
        self, tokens: Tokens, read: Collection[Site], edits: Sequence[Edit | Splice],
        start: Start | None,
        logits_to_keep: int, past: object, keep_past: bool, grad: bool,
    ) -> Run:
        check_context(self.info, tokens, check_past(start, past))
        check_sites(self.info, read)
        edits, splice = split_splice(edits)
        edits = start_edits(self.info, tokens, start, read, edits)
        check_edits(self.info, tokens, edits)
        saved: dict[Site, Tensor] = {}
        hooks: list[Hook] = []
        for layer, block in plan_blocks(read, edits, self._weights, saved, splice).items():
            for point in block.points:
                if point == "qkv":
                    hooks += [(_HOOK[point].format(layer, kind),
                               _as_hook(partial(block.proj, kind))) for kind in "qkv"]
                    continue
                name = _HOOK["mlp_in" if point == "mlp_input" and not self._mlp_norm else point]
                hooks.append((name.format(layer), _as_hook(getattr(block, point))))
        ids = tokens.tensor(self.info.device)
        kwargs: dict[str, Any] = {"logits_to_keep": logits_to_keep, "return_type": "logits"}
        if keep_past or past is not None:
            kwargs.update(return_type="logits_and_cache", past_key_values=past, use_cache=True)
        hooked = self.bridge.hooks(fwd_hooks=hooks) if hooks else nullcontext()
        with self._skipping(start.layer if start is not None else 0), hooked:
            out = self.bridge(ids, **kwargs)
        logits, cache = out if kwargs["return_type"] == "logits_and_cache" else (out, None)
        logits = logits if grad else logits.detach().clone()
        return Run(tokens, logits, saved, cache if keep_past else None)

    @contextmanager
    def _skipping(self, below: int) -> Iterator[None]:
        """Blocks below ``below`` pass their input through instead of running."""
        blocks = list(self.bridge.blocks)[:below]
        for block in blocks:  # on the instance itself: bridges forward setattr to HF modules
            object.__setattr__(block, "forward", _pass_through)
        try:
            yield
        finally:
            for block in blocks:
                object.__delattr__(block, "forward")

    def _w_o(self, layer: int) -> Tensor:
        return self.bridge.blocks[layer].attn.W_O.detach()

    def unembed(self, hidden: Tensor) -> Tensor:
        """Final norm + unembedding (+ soft-capping) of residual vectors [..., D] -> [..., V]."""
        return softcap(self.bridge.unembed(self.bridge.ln_final(hidden)), self.info)


def _boot(loaded: LoadedHF) -> Any:
    """A TransformerBridge over the loaded HF model (no download, TL's logging quiet)."""
    from transformer_lens.model_bridge import TransformerBridge

    device = str(next(loaded.model.parameters()).device)
    dtype = next(loaded.model.parameters()).dtype
    tl_logger = logging.getLogger("transformer_lens")
    previous = tl_logger.level
    tl_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return TransformerBridge.boot_transformers(
                loaded.hf_name, hf_model=loaded.model, tokenizer=loaded.tokenizer,
                device=device, dtype=dtype,
            )
    finally:
        tl_logger.setLevel(previous)


def _as_hook(point: Callable[[Tensor], Tensor | None]) -> Callable[[Tensor, Any], Tensor]:
    """A TL hook calling a BlockHooks point; read-only points pass the input through."""

    def hook(x: Tensor, hook: Any) -> Tensor:
        out = point(x)
        return x if out is None else out

    return hook


def _pass_through(*args: Any, **kwargs: Any) -> Tensor:
    """A skipped block: its output is its input (a start edit then sets the residual)."""
    return args[0] if args else kwargs["hidden_states"]
