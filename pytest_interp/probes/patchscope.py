"""probes layer: patchscopes (Ghandeharioun et al. 2024), written once against the Runner interface.

The source prompt's hidden state at (source layer, position) -- block ``layer``'s output,
resid_post, as obvs reads ``layers[layer].output`` -- is optionally mapped, written over the
target prompt's hidden state at (target layer, position), and the target is decoded greedily.

Sweeps are batched: every (source layer, target layer) pair is one row of one batched
generation; the target prompt's prefix before the patched position is run once and its
key/value cache shared by all rows, so each row computes only the positions from the patch on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ..backends.base import Edit
from ..errors import InterpError, SiteError
from ..progress import progress
from ..results import PatchscopeResult, TokenSpec, find_token
from ..settings import IDENTITY_PROMPT, PLACEHOLDER
from ..sites import Site
from .generation import Margins
from .runner import Runner

Mapping = Callable[[Tensor], Tensor] | Tensor | np.ndarray | None


@dataclass(frozen=True)
class SourceContext:
    """Where the hidden state comes from (obvs's SourceContext)."""

    prompt: str
    position: TokenSpec
    layer: int


@dataclass(frozen=True)
class TargetContext:
    """Where it goes and how it is decoded (obvs's TargetContext).

    ``layer`` None = the source layer. ``position`` defaults to the ``?`` placeholder.
    ``mapping`` is a callable [D] -> [D] or a [D, D] matrix M applied as ``M @ h``.
    """

    prompt: str = IDENTITY_PROMPT
    position: TokenSpec = PLACEHOLDER
    layer: int | None = None
    mapping: Mapping = None
    max_new_tokens: int = 5


def layer_pairs(
    model: Runner, layers: int | Iterable[int] | None,
    target_layers: int | Iterable[int] | None = None, mode: Literal["pairs", "grid"] = "pairs",
) -> tuple[tuple[int, int], ...]:
    """(source, target) block pairs: zipped (obvs ``over_pairs``; one target layer, or none =
    the same layers) or the full grid (obvs ``over``). Negative layers count from the end."""
    sources = _layers(model, layers, "layer")
    if mode not in ("pairs", "grid"):
        raise InterpError(f"mode {mode!r} is not 'pairs' or 'grid'")
    if target_layers is None:
        targets = sources
    else:
        targets = _layers(model, target_layers, "target_layer")
    if mode == "grid":
        return tuple((s, t) for s in sources for t in targets)
    if len(targets) == 1:
        targets = targets * len(sources)
    if len(targets) != len(sources):
        raise InterpError(
            f"{len(sources)} source layers but {len(targets)} target layers: pass as many "
            "target layers as source layers (or one), or mode='grid'"
        )
    return tuple(zip(sources, targets, strict=True))


def _layers(model: Runner, layers: int | Iterable[int] | None, what: str) -> list[int]:
    if layers is None:
        return list(range(model.info.n_layers))
    if isinstance(layers, int | np.integer) and not isinstance(layers, bool):
        layers = [int(layers)]
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise SiteError(f"{what} must be an int or a list of ints, got {layers!r}")
    out = [model.info.check_layer(layer, what) for layer in layers]
    if not out:
        raise SiteError(f"{what} is empty: pass at least one layer")
    return out


def _mapped(mapping: Mapping, hidden: Tensor, d_model: int) -> Tensor:
    """Apply ``mapping`` to source vectors [N, D]; check the result is [N, d_model]."""
    if mapping is None:
        return hidden
    if isinstance(mapping, np.ndarray):
        mapping = torch.from_numpy(mapping)
    if isinstance(mapping, Tensor):
        if mapping.ndim != 2 or mapping.shape[1] != hidden.shape[-1]:
            raise InterpError(
                f"a linear mapping must be a [d_model, d_model] = [{d_model}, "
                f"{hidden.shape[-1]}] matrix, got {list(mapping.shape)}"
            )
        out = hidden @ mapping.to(hidden).T
    elif callable(mapping):
        out = torch.stack([torch.as_tensor(mapping(h)) for h in hidden]).to(hidden)
    else:
        raise InterpError(
            f"mapping must be a callable or a matrix, got {type(mapping).__name__}"
        )
    if tuple(out.shape) != (hidden.shape[0], d_model):
        raise InterpError(
            f"the mapping returned vectors of shape {list(out.shape[1:])}, expected "
            f"[{d_model}] (the target model's d_model)"
        )
    return out


def _first_token(model: Runner, expected: str | int | None) -> int | None:
    """The id whose first-step probability is kept: a token id, or a text's first token."""
    if expected is None or not isinstance(expected, str):
        return None if expected is None else model.vocab.id(expected)
    ids = model.vocab.encode(expected)
    if not ids:
        raise InterpError(f"expected text {expected!r} has no tokens: pass a non-empty string")
    return ids[0]


@dataclass(frozen=True)
class Patchscope:
    """What a patchscope is asked (the probe's one argument; its memo key when ``mapping``
    is None): the hidden state of ``token`` after each source layer in ``source``, patched
    over the target's ``target_token`` after each target layer and decoded greedily.
    ``mode="pairs"`` zips ``layers`` with ``target_layers`` (obvs ``over_pairs``; None = the
    same layers), ``mode="grid"`` takes every combination (obvs ``over``); ``layers`` None =
    all. ``mapping``: a callable [D] -> [D] or a [D, D] matrix M applied as ``M @ h``.
    ``expected``: a token (or a text, for its first token) whose probability at the first
    generated position is kept per pair."""

    source: str
    token: TokenSpec
    layers: int | tuple[int, ...] | None = None
    target: str = IDENTITY_PROMPT
    target_layers: int | tuple[int, ...] | None = None
    mode: Literal["pairs", "grid"] = "pairs"
    target_token: TokenSpec = PLACEHOLDER
    mapping: Mapping = None
    max_new_tokens: int = 5
    expected: str | int | None = None
    batch_size: int = 256

    def __post_init__(self) -> None:
        for name in ("layers", "target_layers"):
            value = getattr(self, name)
            if isinstance(value, Iterable) and not isinstance(value, str | int):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.token, list):
            object.__setattr__(self, "token", tuple(self.token))

    @classmethod
    def of(cls, source: SourceContext, target: TargetContext) -> Patchscope:
        """obvs's contexts as a spec."""
        return cls(source.prompt, source.position, layers=source.layer, target=target.prompt,
                   target_layers=target.layer, target_token=target.position,
                   mapping=target.mapping, max_new_tokens=target.max_new_tokens)


@torch.inference_mode()
def patchscope(model: Runner, spec: Patchscope) -> PatchscopeResult:
    """Read, map, patch and decode for every (source layer, target layer) pair, batched."""
    source, token, layers, target, target_layers, mode = (
        spec.source, spec.token, spec.layers, spec.target, spec.target_layers, spec.mode)
    target_token, mapping, max_new_tokens, expected, batch_size = (
        spec.target_token, spec.mapping, spec.max_new_tokens, spec.expected, spec.batch_size)
    pairs = layer_pairs(model, layers, target_layers, mode)
    src_tokens, tgt_tokens = model.tokens(source), model.tokens(target)
    for tokens in (src_tokens, tgt_tokens):
        if tokens.batch != 1:
            raise InterpError("a patchscope takes one source and one target prompt")
    src_pos = find_token(src_tokens.strs[0], token, source, "source")
    tgt_pos = find_token(tgt_tokens.strs[0], target_token, target, "target")
    expected_id = _first_token(model, expected)

    source_layers = sorted({s for s, _ in pairs})
    run = model.run(src_tokens, read=[Site(layer, "resid_post") for layer in source_layers])
    hidden = torch.stack([run.acts[Site(s, "resid_post")][0, src_pos] for s, _ in pairs])
    hidden = _mapped(mapping, hidden, model.info.d_model)

    ids: list[tuple[int, ...]] = []
    probs: list[float] = []
    margins: list[tuple[float, ...]] = []
    starts = range(0, len(pairs), batch_size)
    for lo in progress(starts, total=len(starts), desc="patchscope"):
        chunk = pairs[lo:lo + batch_size]
        edits = []
        for target_layer in sorted({t for _, t in chunk}):
            rows = tuple(i for i, (_, t) in enumerate(chunk) if t == target_layer)
            edits.append(Edit(Site(target_layer, "resid_post"),
                              hidden[[lo + r for r in rows]][:, None],
                              positions=(tgt_pos,), rows=rows))

        def first_step(step: int, logits: Tensor) -> None:
            if step == 0 and expected_id is not None:
                probs.extend(logits.float().softmax(-1)[:, expected_id].tolist())

        steps = Margins(then=first_step)
        out = model.generate_tokens(tgt_tokens.repeat(len(chunk)),
                                    max_new_tokens=max_new_tokens, edits=edits, on_step=steps)
        ids.extend(row[tgt_tokens.length:] for row in out.ids)
        margins.extend(steps.rows())
    return PatchscopeResult(
        model=model.info.name, source=source, source_tokens=src_tokens.strs[0],
        source_position=src_pos, target=target, target_tokens=tgt_tokens.strs[0],
        target_position=tgt_pos, pairs=pairs,
        continuations=tuple(model.vocab.decode(row) for row in ids), token_ids=tuple(ids),
        expected=None if expected_id is None else model.vocab.decode_one(expected_id),
        expected_prob=tuple(probs) if expected_id is not None else None,
        margins=tuple(margins), tokens=tuple(tuple(model.vocab.decode_one(i) for i in row)
                                             for row in ids),
    )
