"""probes layer: steering vectors and their effect, written once against the Runner interface.

A vector comes from one contrastive prompt pair (ActAdd: the difference of activations at a
site and position), from the mean difference over many pairs (CAA), or from a file. It is
added, times each coefficient, at (layer, site). All coefficients are rows of one batched
forward pass (and one batched generation); coefficient 0 is the unsteered run itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from .. import metrics
from ..backends.base import Edit
from ..errors import InterpError
from ..files import check_vector_file
from ..metrics import Metric
from ..results import SteeringResult, token_position
from ..sites import STEER_SITES, Component, Site
from .generation import Margins
from .runner import Runner

Positions = Literal["all", "last"] | int


def _check_site(site: str) -> None:
    if site not in STEER_SITES:
        raise InterpError(f"site {site!r} cannot be steered: use one of {', '.join(STEER_SITES)}")


def _act(model: Runner, prompt: str, site: Site, position: int | str) -> Tensor:
    tokens = model.tokens(prompt)
    pos = token_position(tokens.strs[0], position, prompt)
    return model.run(tokens, read=[site]).acts[site][0, pos].float()


def steering_vector(
    model: Runner, positive: str | Sequence[str], negative: str | Sequence[str], *,
    layer: int, site: Component = "resid_pre", position: int | str = -1,
) -> Tensor:
    """act(positive) - act(negative) at (layer, site, position); for lists of prompts, the
    mean of the pairwise differences (CAA). Raises if the result is zero."""
    _check_site(site)
    where = Site(model.info.check_layer(layer), site)
    pos_list = [positive] if isinstance(positive, str) else list(positive)
    neg_list = [negative] if isinstance(negative, str) else list(negative)
    if not pos_list or len(pos_list) != len(neg_list):
        raise InterpError(
            f"{len(pos_list)} positive but {len(neg_list)} negative prompts: pass pairs, as "
            "many of each (at least one)"
        )
    diffs = [_act(model, p, where, position) - _act(model, n, where, position)
             for p, n in zip(pos_list, neg_list, strict=True)]
    vector = torch.stack(diffs).mean(0)
    check_vector(vector, model.info.d_model, f"the {where} difference of the prompts")
    return vector


def random_like(vector: Tensor, seed: int) -> Tensor:
    """A seeded random direction with ``vector``'s norm (a negative control)."""
    gen = torch.Generator().manual_seed(seed)
    draw = torch.randn(vector.shape, generator=gen, dtype=torch.float32)
    return (draw * (vector.float().norm() / draw.norm())).to(vector.dtype)


def check_vector(vector: Tensor, d_model: int, what: str) -> None:
    """One clear error for a vector of the wrong shape, non-finite or zero."""
    if tuple(vector.shape) != (d_model,):
        raise InterpError(
            f"{what} has shape {list(vector.shape)}, expected [{d_model}] (the model's d_model)"
        )
    if not torch.isfinite(vector).all():
        raise InterpError(f"{what} has NaN or infinite entries")
    if float(vector.norm()) == 0:
        raise InterpError(
            f"{what} is zero (norm 0): use prompts whose activations differ there"
        )


def load_vector(path: str | Path, d_model: int) -> Tensor:
    """A [d_model] vector from a .pt, .npy or .safetensors file (one tensor, or key 'vector')."""
    path = check_vector_file(path)
    try:
        if path.suffix == ".npy":
            loaded: object = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".pt":
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            loaded = load_file(str(path))
    except Exception as exc:  # any unreadable file gets the same one line
        raise InterpError(
            f"steering vector file {str(path)!r} cannot be read ({type(exc).__name__}: {exc}): "
            "save one tensor of shape [d_model]"
        ) from None
    if isinstance(loaded, dict):
        tensors = {k: v for k, v in loaded.items() if isinstance(v, Tensor)}
        if "vector" in tensors:
            loaded = tensors["vector"]
        elif len(tensors) == 1:
            loaded = next(iter(tensors.values()))
        else:
            raise InterpError(
                f"steering vector file {str(path)!r} holds {sorted(tensors)}: store one tensor, "
                "or name it 'vector'"
            )
    if not isinstance(loaded, Tensor):
        raise InterpError(
            f"steering vector file {str(path)!r} holds a {type(loaded).__name__}, not a tensor"
        )
    vector = loaded.detach().float()
    check_vector(vector, d_model, f"the steering vector in {str(path)!r}")
    return vector


def _edit_positions(positions: Positions, length: int) -> tuple[int, ...] | None:
    if positions == "all":
        return None
    if positions == "last":
        return (length - 1,)
    if isinstance(positions, int) and not isinstance(positions, bool) \
            and -length <= positions < length:
        return tuple(range(positions % length, length))
    raise InterpError(
        f"positions must be 'all', 'last' or an int N (steer positions N.. of the "
        f"{length}-token prompt), got {positions!r}"
    )


def _sampler(seed: int, temperature: float) -> Callable[[Tensor], Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def choose(logits: Tensor) -> Tensor:
        probs = torch.softmax(logits.float().cpu() / temperature, -1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]

    return choose


@dataclass(frozen=True, eq=False)
class Vector:
    """A steering vector as a spec holds it: the tensor, equal and hashed by its bytes."""

    tensor: Tensor
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        data = self.tensor.detach().float().cpu().numpy().tobytes()
        object.__setattr__(self, "digest", hashlib.sha1(data).hexdigest())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vector) and other.digest == self.digest

    def __hash__(self) -> int:
        return hash(self.digest)


@dataclass(frozen=True)
class Steering:
    """What steering is asked (the probe's one argument and its memo key): add ``coef *
    vector`` at (layer, site) on ``positions`` ("all" includes generated tokens; "last", or
    int N for prompt positions N..) for each coefficient, batched; measure ``metric`` of
    ``target`` (None: logit(target) - logit(foil), or log P(target) without a foil; ``"kl"``
    is from the unsteered run), the KL, the top tokens, and ``max_new_tokens`` of steered
    generation (greedy, or seeded sampling). ``normalize`` scales the vector to unit norm."""

    prompt: str
    vector: Vector
    layer: int
    coef: float | tuple[float, ...] = 1.0
    site: Component = "resid_pre"
    positions: Positions = "all"
    normalize: bool = False
    target: str | None = None
    foil: str | None = None
    max_new_tokens: int = 0
    sample: bool = False
    seed: int = 0
    temperature: float = 1.0
    top_k: int = 5
    metric: Metric | None = None

    def __post_init__(self) -> None:
        coef = self.coef
        object.__setattr__(self, "coef", (coef,) if isinstance(coef, int | float) else
                           tuple(coef))

    @property
    def coefs(self) -> tuple[float, ...]:
        return self.coef  # type: ignore[return-value]


@torch.inference_mode()
def steer(model: Runner, spec: Steering) -> SteeringResult:
    """What ``spec`` asks for, every coefficient a row of one batched forward pass."""
    prompt, vector, layer, coefs, site, positions = (
        spec.prompt, spec.vector.tensor, spec.layer, spec.coefs, spec.site, spec.positions)
    normalize, target, foil, max_new_tokens, sample, seed, temperature, top_k, metric = (
        spec.normalize, spec.target, spec.foil, spec.max_new_tokens, spec.sample, spec.seed,
        spec.temperature, spec.top_k, spec.metric)
    _check_site(site)
    where = Site(model.info.check_layer(layer), site)
    vector = torch.as_tensor(vector).detach().float()
    check_vector(vector, model.info.d_model, "the steering vector")
    if normalize:
        vector = vector / vector.norm()
    coefs = tuple(float(c) for c in coefs)
    if not coefs or not all(np.isfinite(coefs)):
        raise InterpError(f"coef must be finite numbers (at least one), got {list(coefs)!r}")
    if temperature <= 0:
        raise InterpError(f"temperature must be > 0, got {temperature}")
    tokens = model.tokens(prompt)
    if tokens.batch != 1:
        raise InterpError("steer takes one prompt; call it once per prompt")
    where_pos = _edit_positions(positions, tokens.length)
    target_id = None if target is None else model.vocab.id(target)
    foil_id = None if foil is None else model.vocab.id(foil)
    steered = [c for c in dict.fromkeys(coefs) if c != 0]  # coef 0 is the baseline itself
    rows = [0.0, *steered]
    edits = [Edit(where, c * vector, mode="add", positions=where_pos, rows=(i,))
             for i, c in enumerate(rows) if c != 0]
    batch = tokens.repeat(len(rows))
    logits = model.run(batch, edits=edits).logits[:, -1].float()  # [rows, V]
    logprobs = torch.log_softmax(logits, -1)
    kl = (logprobs[0].exp() * (logprobs[0] - logprobs)).sum(-1)
    if metric is not None:
        value = metrics.build(metric, model.vocab, target, foil, logits[0])(logits)
    elif target_id is None:
        value = None
    elif foil_id is None:
        value = logprobs[:, target_id]
    else:
        value = logits[:, target_id] - logits[:, foil_id]
    top = logprobs.topk(top_k, -1)
    tops = tuple(tuple((model.vocab.decode_one(int(i)), float(p.exp()))
                       for p, i in zip(top.values[r], top.indices[r], strict=True))
                 for r in range(len(rows)))
    texts: tuple[str, ...] = ()
    steps = Margins()
    new_ids: list[tuple[int, ...]] = []
    if max_new_tokens:
        out = model.generate_tokens(batch, max_new_tokens=max_new_tokens, edits=edits,
                                    choose=_sampler(seed, temperature) if sample else None,
                                    on_step=steps)
        new_ids = [row[tokens.length:] for row in out.ids]
        texts = tuple(model.vocab.decode(row) for row in new_ids)
    index = [rows.index(c) if c != 0 else 0 for c in coefs]
    return SteeringResult(
        model=model.info.name, prompt=prompt, layer=where.layer, site=site,
        positions=positions, vector_norm=float(vector.norm()), coefs=coefs,
        target=target, foil=foil,
        baseline=None if value is None else float(value[0]),
        values=None if value is None else value[index].cpu().numpy().astype(np.float64),
        kl=kl[index].cpu().numpy().astype(np.float64),
        baseline_top=tops[0], steered_top=tuple(tops[i] for i in index),
        baseline_text=texts[0] if texts else None,
        texts=tuple(texts[i] for i in index) if texts else None,
        sampled=sample,
        tokens=tuple(tuple(model.vocab.decode_one(t) for t in new_ids[i]) for i in [0, *index])
        if texts else None,
        margins=tuple(steps.rows()[i] for i in [0, *index]) if texts else None,
        measure=None if metric is None else metrics.label(metric),
    )
