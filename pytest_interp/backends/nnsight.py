"""backends layer: adapter over nnsight 0.8 ``TransformersModel``: the only place HF module paths
live."""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Collection, Sequence
from typing import Any

import nnsight
import torch
from torch import Tensor

from ..errors import InterpError, ModelSpecError
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
    BlockHooks,
    HFTokens,
    check_context,
    contiguous_unembedding,
    model_info,
    plan_blocks,
    softcap,
)
from .loading import LoadedHF
from .splice import Splice
from .weights import HFWeights, qkv_index


def _get(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part)
    return root


BACKEND_ENV = "PYTEST_INTERP_NDIF_BACKEND"


def remote_backend(lm: Any) -> Any:
    """The nnsight Backend remote traces run through: nnsight's own NDIF client (None, i.e.
    ``trace(remote=True)``), or one made by the ``module:callable`` factory named in
    $PYTEST_INTERP_NDIF_BACKEND (a fake server in tests, a private deployment)."""

    factory = os.environ.get(BACKEND_ENV)
    if not factory:
        return None
    module, _, name = factory.partition(":")
    try:
        make = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelSpecError(f"${BACKEND_ENV}={factory!r} names no factory ({exc}): write it "
                             "as module:callable, or unset it to use NDIF") from None
    return make(lm)


def ndif_api_key() -> str | None:
    """The NDIF API key nnsight would send (NDIF_API_KEY, or one saved with nnsight)."""
    from nnsight import CONFIG

    return CONFIG.API.APIKEY or None


class NNsightBackend(HFTokens):
    """Backend over an nnsight ``TransformersModel`` wrapping a pre-loaded HF model.

    With ``remote=True`` the HF model is weightless (meta device) and every forward pass,
    unembedding and weight read happens inside a trace run by NDIF: results come back only
    through saved values."""

    def __init__(
        self, loaded: LoadedHF, *, prepend_bos: bool | None = None, remote: bool = False,
        lm: Any = None,
    ) -> None:
        from nnsight import TransformersModel

        self.info: ModelInfo = model_info(loaded, "nnsight")
        self._layout = family_of(self.info.architecture).layout
        self._hf = loaded.model
        contiguous_unembedding(loaded.model)
        self._tokenizer = loaded.tokenizer
        self._prepend_bos = prepend_bos
        if lm is not None:
            self.lm = lm
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.lm = TransformersModel(
                    loaded.model, task="text-generation", tokenizer=loaded.tokenizer,
                    **({"device": "meta"} if remote else {}),  # a weightless model stays on meta
                )
        self._blocks = _get(self.lm, self._layout.blocks)
        hf_blocks = _get(self._hf, self._layout.blocks)
        self._w_o_cache: dict[int, Tensor] = {}
        self._hf_o_proj = [_get(b, f"{self._layout.attn}.{self._layout.o_proj}") for b in hf_blocks]
        self._final_norm = _get(self._hf, self._layout.final_norm)
        self._weights = HFWeights(self._hf, self.info, self._w_o)
        self.remote = remote
        self._input_device = "cpu" if remote else self.info.device
        if remote:
            import pytest_interp

            nnsight.register(pytest_interp)  # the server has no pytest-interp: ship our code
            _canonical_hub_id(loaded.hf_name)

    def _trace(self, tokens: Tensor, **kwargs: Any) -> Any:
        """A trace of ``tokens``: local, or sent to NDIF (or the configured fake)."""
        if self.remote:
            backend = remote_backend(self.lm)
            kwargs.update({"backend": backend} if backend is not None else {"remote": True})
        return self.lm.trace(tokens, **kwargs)

    def _w_o(self, layer: int) -> Tensor:
        """The output projection per head, [H, Dh, D] (a plain tensor, made outside inference
        mode: a gradient run may use it later)."""
        if layer not in self._w_o_cache:
            with torch.inference_mode(False):
                weight = _weight(self._hf_o_proj[layer])
                if not self._layout.o_proj_in_out:
                    weight = weight.T  # nn.Linear stores [out, in]
                self._w_o_cache[layer] = weight.reshape(self.info.n_heads, -1,
                                                        self.info.d_model)
        return self._w_o_cache[layer]

    def run(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit | Splice] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        if grad and self.remote:
            raise InterpError("grad=True needs a local model: remote (NDIF) runs send back "
                              "values without their autograd graph")
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
        blocks = plan_blocks(read, edits, self._weights, saved, splice)
        skipped = range(start.layer if start is not None else 0)
        kwargs: dict[str, Any] = {"logits_to_keep": logits_to_keep}
        if keep_past or past is not None:
            kwargs.update(past_key_values=past, use_cache=True)
        cache = None
        with self._trace(tokens.tensor(self._input_device), **kwargs):
            for layer in skipped:  # a start edit then installs the residual
                self._blocks[layer].skip(self._blocks[layer].input)
            for layer, block in blocks.items():
                self._visit(self._blocks[layer], block)
            logits = self.lm.lm_head.output.save()  # soft-capped below, as HF does after it
            # Remotely the hooks fill the server's copy of `saved`: send it back as plain
            # tuples (the server cannot pickle our classes by reference).
            found = nnsight.save([(s.layer, s.component, v) for s, v in saved.items()])
            if keep_past:
                cache = self.lm.output.past_key_values.save()
        saved = {Site(layer, component): v for layer, component, v in found}
        logits = logits if grad else logits.detach().clone()
        return Run(tokens, softcap(logits, self.info), saved, cache)

    def _visit(self, envoy: Any, block: BlockHooks) -> None:
        """Call the block's points on the live values, in execution order (nnsight needs it)."""
        layout, n_heads = self._layout, self.info.n_heads
        attn = _get(envoy, layout.attn)
        for point in block.points:
            if point == "resid_pre":
                x = envoy.input
                _write(x, block.resid_pre(x))
            elif point == "qkv":
                self._visit_qkv(attn, block)
            elif point == "z":
                z = _get(attn, layout.o_proj).input
                block.z(z.reshape(*z.shape[:2], n_heads, -1))
            elif point == "attn_pattern":
                block.attn_pattern(attn.output[1])
            elif point == "attn_raw":
                out = attn.output[0]
                _write(out, block.attn_raw(out))
            elif point == "attn_out":
                out = _first(_get(envoy, layout.attn_out).output)
                _write(out, block.attn_out(out))
            elif point == "resid_mid":
                assert layout.mid is not None  # parallel blocks refuse resid_mid earlier
                block.resid_mid(_get(envoy, layout.mid).input)
            elif point == "mlp_input":  # replaced, not written: it is resid_mid itself
                reader = _get(envoy, layout.mlp_norm or layout.mlp)
                x = reader.input
                new = block.mlp_input(x)
                if new is not x:
                    reader.input = new
            elif point == "mlp_in":  # replaced, not written: it may be resid_mid itself
                mlp = _get(envoy, layout.mlp)
                x = mlp.input
                new = block.mlp_in(x)
                if new is not x:
                    mlp.input = new
            elif point == "mlp_out":
                out = _first(_get(envoy, layout.mlp_out).output)
                _write(out, block.mlp_out(out))
            elif point == "resid_post":
                out = _first(envoy.output)
                _write(out, block.resid_post(out))

    def _visit_qkv(self, attn: Any, block: BlockHooks) -> None:
        """Pass each of the q, k, v projections' outputs, as [B, P, n, Dh], through the block,
        in the order they run. An edited output is replaced, not written in place: a q/k
        norm may read it next."""
        layout, info = self._layout, self.info
        if len(layout.qkv) == 3:
            for kind, path in zip("qkv", layout.qkv, strict=True):
                module = _get(attn, path)
                out = module.output
                heads = out.reshape(*out.shape[:2], info.heads_of(f"{kind}_input"), -1)
                new = block.proj(kind, heads)
                if new is not heads:
                    module.output = new.reshape(out.shape)
            return
        module = _get(attn, layout.qkv[0])
        out = fused = module.output
        index = qkv_index(layout, info, out.shape[-1])
        for kind in "qkv":
            view = out[..., index[kind]]
            heads = view.reshape(*view.shape[:2], info.heads_of(f"{kind}_input"), -1)
            new = block.proj(kind, heads)
            if new is not heads:
                fused = fused.clone() if fused is out else fused
                fused[..., index[kind]] = new.reshape(view.shape)
        if fused is not out:
            module.output = fused

    def unembed(self, hidden: Tensor) -> Tensor:
        """Final norm + unembedding (+ soft-capping) of residual vectors [..., D] -> [..., V]."""
        if not self.remote:
            return softcap(self._hf.lm_head(self._final_norm(hidden)), self.info)
        norm = _get(self.lm, self._layout.final_norm)
        one = torch.zeros(1, 1, dtype=torch.long)  # a forward must run; its output is unused
        with self._trace(one, logits_to_keep=1):
            logits = self.lm.lm_head(norm(hidden)).save()
        return softcap(logits, self.info)


def _canonical_hub_id(name: str) -> None:
    """nnsight asks the Hub how to spell a repo id before a remote request; pytest-interp keeps
    the Hub offline, so the spec's spelling is taken as canonical."""
    from nnsight.modeling import huggingface

    cache = getattr(huggingface, "_ID_CACHE", None)
    if isinstance(cache, dict):
        cache.setdefault(name, name)


def _weight(module: Any) -> Tensor:
    """``common.module_weight``, here again: remote (NDIF) traces ship this module's own
    functions to the server, not those it imports."""
    weight = module.weight.detach()
    hook = getattr(module, "_hf_hook", None)
    if weight.is_meta and hook is not None and getattr(hook, "weights_map", None) is not None:
        weight = hook.weights_map["weight"].detach().to(getattr(hook, "execution_device", "cpu"))
    return weight


def _first(value: Any) -> Any:
    """A module's output tensor (decoder layers and some modules return tuples)."""
    return value[0] if isinstance(value, tuple) else value


def _write(live: Tensor, new: Tensor) -> None:
    """Write an edited value into the live tensor in place, so the model runs on with it."""
    if new is not live:
        live[...] = new
