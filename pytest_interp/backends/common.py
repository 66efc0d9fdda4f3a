"""backends layer: what both adapters share: tokenization policy, ModelInfo, and grouping of
reads/edits."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from ..errors import InterpError
from ..sites import HEAD_INPUTS
from .architectures import family_of
from .base import Component, Edit, ModelInfo, Site, Tokens, apply_edits, resid_mid_as_attn_out
from .loading import LoadedHF
from .splice import Splice, SpliceRun


def hf_tokenize(tokenizer: Any, text: str, prepend_bos: bool | None) -> Tokens:
    """Tokenize as the HF tokenizer does by default; ``prepend_bos`` forces BOS on or off."""
    if not isinstance(text, str):
        raise InterpError(f"a prompt must be a string, got {type(text).__name__}: {text!r}")
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if prepend_bos is True:
        if bos is None:
            raise InterpError(
                "interp_prepend_bos is true but this tokenizer has no BOS token: "
                "set interp_prepend_bos = auto"
            )
        if not ids or ids[0] != bos:
            ids.insert(0, bos)
    elif prepend_bos is False and bos is not None and ids and ids[0] == bos:
        ids.pop(0)
    if not ids:
        raise InterpError("the prompt tokenized to no tokens: pass a non-empty prompt")
    strs = tuple(tokenizer.decode([i]) for i in ids)
    return Tokens((tuple(ids),), (strs,))


class HFTokens:
    """Tokenization through a Hugging Face tokenizer, shared by the adapters."""

    _tokenizer: Any
    _prepend_bos: bool | None

    def tokenize(self, text: str) -> Tokens:
        return hf_tokenize(self._tokenizer, text, self._prepend_bos)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(ids)))

    def encode(self, text: str) -> list[int]:
        """Token ids of a text piece, without special tokens (for target tokens)."""
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def special_ids(self) -> frozenset[int]:
        return frozenset(self._tokenizer.all_special_ids)

    def vocabulary(self) -> dict[str, int]:
        """Token string -> id, as the tokenizer defines it."""
        return dict(self._tokenizer.get_vocab())

    @property
    def text(self) -> HFTokens:
        """The tokenizer alone, without the model: what results keep (a released model's
        results still decode their tokens while its weights are freed)."""
        return HFText(self._tokenizer, self._prepend_bos)


class HFText(HFTokens):
    """Tokenization with no model attached."""

    def __init__(self, tokenizer: Any, prepend_bos: bool | None) -> None:
        self._tokenizer, self._prepend_bos = tokenizer, prepend_bos


def model_info(loaded: LoadedHF, backend: str) -> ModelInfo:
    config = loaded.model.config
    param = next(loaded.model.parameters())
    n_ctx = getattr(config, "max_position_embeddings", None) or config.n_positions
    architecture = (config.architectures or [type(loaded.model).__name__])[0]
    family = family_of(architecture)
    return ModelInfo(
        name=loaded.resolved.name,
        revision=loaded.revision,
        architecture=architecture,
        n_layers=config.num_hidden_layers,
        n_heads=config.num_attention_heads,
        d_model=config.hidden_size,
        d_vocab=config.vocab_size,
        n_ctx=int(n_ctx),
        dtype=str(param.dtype).removeprefix("torch."),
        device=str(param.device),
        backend=backend,
        family=family.name,
        parallel=family.parallel and bool(getattr(config, "use_parallel_residual", True)),
        logit_softcap=getattr(config, "final_logit_softcapping", None) or None,
        n_kv_heads=getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
        post_norm=family.layout.post_norm,
        mlp_norm_eps=_mlp_norm_eps(loaded.model, family.layout.blocks, family.layout.mlp_norm),
        mlp_norm_centred=not family.rms_norm,
    )


def _mlp_norm_eps(model: Any, blocks: str, mlp_norm: str | None) -> float | None:
    """The epsilon of the first block's norm before the MLP (None: it has none). OLMo's
    LayerNorm keeps it in its code, as torch's default 1e-5."""
    if mlp_norm is None:
        return None
    norm = model.get_submodule(blocks)[0].get_submodule(mlp_norm)
    return float(next((getattr(norm, name) for name in ("eps", "variance_epsilon")
                       if isinstance(getattr(norm, name, None), float)), 1e-5))


def contiguous_unembedding(model: Any) -> None:
    """Give the model's output embedding a contiguous input. HF computes the logits of the
    last ``logits_to_keep`` positions from a strided slice of the hidden states, and a linear
    layer over a strided batch takes another kernel: up to 9x slower on a 64-row batch
    (SmolLM2's 49,152-token vocabulary), with logits 5e-5 away from the full run's."""
    head = model.get_output_embeddings()
    if head is None or getattr(head, "interp_contiguous", False):
        return
    head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    head.interp_contiguous = True


def softcap(logits: Tensor, info: ModelInfo) -> Tensor:
    """The model's final logit soft-capping (Gemma 2/3: ``cap * tanh(logits / cap)``), which
    Hugging Face applies after the unembedding; the identity for other families."""
    cap = info.logit_softcap
    return logits if cap is None else torch.tanh(logits / cap) * cap


def check_context(info: ModelInfo, tokens: Tokens, cached: int = 0) -> None:
    """``tokens`` (after ``cached`` positions already run) must fit the model's context."""
    if cached + tokens.length > info.n_ctx:
        raise InterpError(
            f"the prompt has {cached + tokens.length} tokens but {info.name} takes at most "
            f"{info.n_ctx}: shorten the prompt"
        )


@dataclass
class LayerPlan:
    """What to read and edit in one block, by component."""

    reads: set[Component] = field(default_factory=set)
    edits: dict[Component, list[Edit]] = field(default_factory=lambda: defaultdict(list))
    spliced: set[Component] = field(default_factory=set)

    def touches(self, component: Component) -> bool:
        return (component in self.reads or bool(self.edits.get(component))
                or component in self.spliced)


POINTS = ("resid_pre", "qkv", "z", "attn_pattern", "attn_raw", "attn_out", "resid_mid",
          "mlp_input", "mlp_in", "mlp_out", "resid_post")
"""The points of a block, in execution order."""


class BlockHooks:
    """Read and edit one block, called by an adapter at each point in execution order.

    The points (``POINTS``): ``resid_pre`` (block input), ``qkv`` (the q, k and v projections'
    outputs [B, P, n, Dh], each passed to ``proj``), ``z`` (attention heads' mixed values
    [B, P, H, Dh], before the output projection), ``attn_pattern``, ``attn_raw`` (the
    attention module's output), ``attn_out`` (what attention adds to the residual stream: the
    same tensor, or its post-attention norm in Gemma 2/3 and OLMo-2), ``resid_mid`` (read
    only), ``mlp_input`` (the MLP norm's input, which only the MLP reads), ``mlp_in`` (the MLP's
    normalised input), ``mlp_out``, ``resid_post``. Methods that
    return a tensor return the value that must flow on. head_out edits act through attn_raw,
    resid_mid edits through attn_out, exactly: where nothing is edited the run is
    bit-identical.
    """

    def __init__(
        self, layer: int, plan: LayerPlan, model: BlockWeights, saved: dict[Site, Tensor],
        splice: SpliceRun | None = None,
    ) -> None:
        self.layer = layer
        self.plan = plan
        self.model = model
        self.saved = saved
        self.splice = splice
        self._resid_pre: Tensor | None = None
        self._head_delta: Tensor | None = None

    @property
    def points(self) -> list[str]:
        """The points this block needs an adapter to call, in execution order."""
        plan, points = self.plan, set()
        mid = bool(plan.edits.get("resid_mid"))
        heads_in = any(plan.touches(c) for c in HEAD_INPUTS)
        if plan.touches("resid_pre") or mid or heads_in:
            points.add("resid_pre")
        if heads_in:
            points.add("qkv")
        if plan.touches("head_out"):
            points.add("z")
        if plan.edits.get("head_out"):
            points.add("attn_raw")
        if plan.touches("attn_out") or mid:
            points.add("attn_out")
        for name in ("attn_pattern", "resid_mid", "mlp_input", "mlp_in", "mlp_out",
                     "resid_post"):
            if plan.touches(name):
                points.add(name)
        return [p for p in POINTS if p in points]

    def _keep(self, component: Component, value: Tensor) -> None:
        if component in self.plan.reads:
            self.saved[Site(self.layer, component)] = value.detach().clone()

    def _edit(self, component: Component, x: Tensor) -> Tensor:
        out = apply_edits(x, self.plan.edits.get(component, ()))
        if self.splice is not None:
            site = Site(self.layer, component)
            more = self.splice.correction(site, out)
            out = out if more is None else out + more
            self.splice.write(site, out)
        self._keep(component, out)
        return out

    def resid_pre(self, x: Tensor) -> Tensor:
        out = self._edit("resid_pre", x)
        self._resid_pre = out
        return out

    def z(self, z: Tensor) -> None:
        per_head = torch.einsum("bphd,hdm->bphm", z, self.model.w_o(self.layer).to(z.dtype))
        edits = self.plan.edits.get("head_out", ())
        new = apply_edits(per_head, edits, per_head=True)
        if edits:
            self._head_delta = new.sum(2) - per_head.sum(2)  # exactly 0 where unedited
        if self.splice is not None:
            self.splice.write(Site(self.layer, "head_out"), new)
        self._keep("head_out", new)

    def attn_pattern(self, pattern: Tensor) -> None:
        self._keep("attn_pattern", pattern)

    def attn_raw(self, x: Tensor) -> Tensor:
        return x if self._head_delta is None else x + self._head_delta

    def attn_out(self, x: Tensor) -> Tensor:
        x = apply_edits(x, self.plan.edits.get("attn_out", ()))
        mid = self.plan.edits.get("resid_mid", ())
        if mid:
            assert self._resid_pre is not None
            x = resid_mid_as_attn_out(x, self._resid_pre, mid)
        if self.splice is not None:
            self.splice.write(Site(self.layer, "attn_out"), x)
        self._keep("attn_out", x)
        return x

    def resid_mid(self, x: Tensor) -> None:
        self._keep("resid_mid", x)

    def proj(self, kind: str, out: Tensor) -> Tensor:
        """One of the q, k, v projections' outputs [B, P, n, Dh], with the edits of its input
        site applied: each edited head's rows of the projection see its own edited copy of
        the residual stream (through the attention's norm). Exactly ``out`` where unedited."""
        component: Component = f"{kind}_input"  # type: ignore[assignment]
        assert self._resid_pre is not None
        x = self._resid_pre.unsqueeze(2).expand(-1, -1, out.shape[2], -1)
        edits = self.plan.edits.get(component, ())
        new = x
        for edit in edits:
            new = apply_edits(new, [edit], per_head=edit.head is not None)
        more = self.splice.correction(Site(self.layer, component), x) if self.splice else None
        new = new if more is None else new + more
        self._keep(component, new)
        if new is x:
            return out
        norm, weight = self.model.qkv(self.layer, kind)
        at = _edited_positions(edits, out.shape[1])
        if at is not None and more is not None:  # a splice changes where it differs
            at = sorted({*at, *more.abs().amax((0, 2, 3)).nonzero()[:, 0].tolist()})
        if at == []:
            return out  # a splice that differs nowhere
        where: slice | list[int] = slice(None) if at is None else \
            slice(at[0], at[-1] + 1) if at == list(range(at[0], at[-1] + 1)) else at
        new, x = new[:, where], x[:, where]  # only these positions change: project them alone
        change = torch.einsum("bpnd,nkd->bpnk", (norm(new) - norm(x)).to(out.dtype),
                              weight.to(out.dtype))
        if isinstance(where, slice):
            out = out.clone()
            out[:, where] += change
            return out
        return out.index_add(1, torch.tensor(at, dtype=torch.long, device=out.device), change)

    def mlp_input(self, x: Tensor) -> Tensor:
        return self._edit("mlp_input", x)

    def mlp_in(self, x: Tensor) -> Tensor:
        return self._edit("mlp_in", x)

    def mlp_out(self, x: Tensor) -> Tensor:
        return self._edit("mlp_out", x)

    def resid_post(self, x: Tensor) -> Tensor:
        return self._edit("resid_post", x)


def _edited_positions(edits: Sequence[Edit], length: int) -> list[int] | None:
    """The positions some edit touches, sorted; None when one touches them all."""
    if any(edit.positions is None for edit in edits):
        return None
    return sorted({p % length for edit in edits for p in edit.positions or ()})


def plan_blocks(
    read: Collection[Site], edits: Sequence[Edit], model: BlockWeights,
    saved: dict[Site, Tensor], splice: Splice | None = None,
) -> dict[int, BlockHooks]:
    """Group reads and edits by layer (edits keep their given order) into BlockHooks."""
    plans: dict[int, LayerPlan] = defaultdict(LayerPlan)
    for site in read:
        plans[site.layer].reads.add(site.component)
    for edit in edits:
        plans[edit.site.layer].edits[edit.site.component].append(edit)
    for site in splice.sites if splice is not None else ():
        plans[site.layer].spliced.add(site.component)
    live = SpliceRun(splice) if splice is not None else None
    return {layer: BlockHooks(layer, plans[layer], model, saved, live)
            for layer in sorted(plans)}


class BlockWeights(Protocol):
    """What BlockHooks needs of the model's weights, per layer."""

    def w_o(self, layer: int) -> Tensor:
        """The output projection per head, [H, Dh, D]."""
        ...

    def qkv(self, layer: int, kind: str) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        """The attention's input norm, and the ``kind`` ("q", "k", "v") projection's rows per
        head [n, Dh, D]."""
        ...
