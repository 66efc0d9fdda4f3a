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
from ..backends.base import Edit, Tokens
from ..errors import InterpError
from ..files import check_vector_file
from ..metrics import Metric
from ..results import SteeringResult, token_position
from ..sites import STEER_SITES, Component, Site
from .batching import by_length
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


@dataclass(frozen=True)
class _Plan:
    """One spec's checked inputs: its tokens, site, vector, the coefficients it asks for and
    its batch rows (0.0, the unsteered run, first; each other coefficient once)."""

    tokens: Tokens
    where: Site
    vector: Tensor
    coefs: tuple[float, ...]
    rows: tuple[float, ...]
    positions: tuple[int, ...] | None


def _plan(model: Runner, spec: Steering) -> _Plan:
    _check_site(spec.site)
    where = Site(model.info.check_layer(spec.layer), spec.site)
    vector = torch.as_tensor(spec.vector.tensor).detach().float()
    check_vector(vector, model.info.d_model, "the steering vector")
    if spec.normalize:
        vector = vector / vector.norm()
    coefs = tuple(float(c) for c in spec.coefs)
    if not coefs or not all(np.isfinite(coefs)):
        raise InterpError(f"coef must be finite numbers (at least one), got {list(coefs)!r}")
    if spec.temperature <= 0:
        raise InterpError(f"temperature must be > 0, got {spec.temperature}")
    tokens = model.tokens(spec.prompt)
    if tokens.batch != 1:
        raise InterpError("steer takes one prompt; call it once per prompt")
    positions = _edit_positions(spec.positions, tokens.length)
    if spec.target is not None:
        model.vocab.id(spec.target)
    if spec.foil is not None:
        model.vocab.id(spec.foil)
    steered = tuple(c for c in dict.fromkeys(coefs) if c != 0)  # coef 0 is the baseline itself
    return _Plan(tokens, where, vector, coefs, (0.0, *steered), positions)


def _edits(plan: _Plan, first: int) -> list[Edit]:
    """The plan's steered rows as one edit, its rows starting at batch row ``first``."""
    steered = [(first + i, c) for i, c in enumerate(plan.rows) if c != 0]
    if not steered:
        return []
    value = torch.stack([c * plan.vector for _, c in steered])[:, None]  # [rows, 1, D]
    return [Edit(plan.where, value, mode="add", positions=plan.positions,
                 rows=tuple(r for r, _ in steered))]


@torch.inference_mode()
def steer(model: Runner, spec: Steering) -> SteeringResult:
    """What ``spec`` asks for, every coefficient a row of one batched forward pass."""
    plan = _plan(model, spec)
    edits = _edits(plan, 0)
    batch = plan.tokens.repeat(len(plan.rows))
    logits = model.run(batch, edits=edits).logits[:, -1].float()  # [rows, V]
    if not spec.max_new_tokens:
        return _result(model, spec, plan, logits)
    steps = Margins()
    out = model.generate_tokens(batch, max_new_tokens=spec.max_new_tokens, edits=edits,
                                choose=_sampler(spec.seed, spec.temperature) if spec.sample
                                else None, on_step=steps)
    new_ids = [row[plan.tokens.length:] for row in out.ids]
    return _result(model, spec, plan, logits, new_ids, steps)


@torch.inference_mode()
def steer_many(model: Runner, specs: Sequence[Steering],
               max_rows: int = 64) -> list[SteeringResult]:
    """``steer`` for each spec, batched: specs whose prompts have one token length share
    forward passes of up to ``max_rows`` rows, fewer if ``--interp-memory`` needs it (a
    prompt's unsteered row shared by its specs); a spec that generates runs alone."""
    out: list[SteeringResult | None] = [None] * len(specs)
    plans: dict[int, _Plan] = {}
    for i, spec in enumerate(specs):
        if spec.max_new_tokens:
            out[i] = steer(model, spec)
        else:
            plans[i] = _plan(model, spec)
    order = list(plans)
    for group in by_length([plans[i].tokens for i in order]):
        chunk: list[int] = []
        prompts: set[tuple[int, ...]] = set()
        wanted = len({plans[order[j]].tokens.ids[0] for j in group}) + sum(
            len(plans[order[j]].rows) - 1 for j in group)
        rows = model.rows_per_pass(plans[order[group[0]]].tokens.length, wanted, max_rows)
        for i in [order[j] for j in group]:
            ids = plans[i].tokens.ids[0]
            need = len(plans[i].rows) - (ids in prompts)  # a prompt's base row is shared
            if chunk and len(prompts) + sum(len(plans[k].rows) - 1 for k in chunk) + need \
                    > rows:
                _steer_chunk(model, specs, plans, chunk, out)
                chunk, prompts = [], set()
            chunk.append(i)
            prompts.add(ids)
        _steer_chunk(model, specs, plans, chunk, out)
    return [r for r in out if r is not None]


def _steer_chunk(model: Runner, specs: Sequence[Steering], plans: dict[int, _Plan],
                 chunk: list[int], out: list[SteeringResult | None]) -> None:
    """One forward pass for the specs in ``chunk`` (one token length)."""
    rows: list[Tokens] = []
    edits: list[Edit] = []
    base: dict[tuple[int, ...], int] = {}  # a prompt's ids -> its unsteered row
    where: dict[int, list[int]] = {}
    for i in chunk:
        plan = plans[i]
        ids = plan.tokens.ids[0]
        if ids not in base:
            base[ids] = len(rows)
            rows.append(plan.tokens)
        first = len(rows) - 1  # _edits numbers rows from here; row 0 of the plan is base
        steered = len(plan.rows) - 1
        edits += _edits(plan, first)
        where[i] = [base[ids], *range(len(rows), len(rows) + steered)]
        rows.extend([plan.tokens] * steered)
    logits = model.forward(Tokens.stack(rows), edits=edits, logits_to_keep=1).logits[:, -1]
    for i in chunk:
        out[i] = _result(model, specs[i], plans[i], logits[where[i]].float())


def _result(model: Runner, spec: Steering, plan: _Plan, logits: Tensor,
            new_ids: Sequence[tuple[int, ...]] = (), steps: Margins | None = None
            ) -> SteeringResult:
    """The result from the plan's rows' last-position logits [rows, V] (and generation)."""
    target, foil, metric, coefs, rows = spec.target, spec.foil, spec.metric, plan.coefs, \
        list(plan.rows)
    target_id = None if target is None else model.vocab.id(target)
    foil_id = None if foil is None else model.vocab.id(foil)
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
    top = logprobs.topk(spec.top_k, -1)
    tops = tuple(tuple((model.vocab.decode_one(int(i)), float(p.exp()))
                       for p, i in zip(top.values[r], top.indices[r], strict=True))
                 for r in range(len(rows)))
    texts = tuple(model.vocab.decode(row) for row in new_ids)
    index = [rows.index(c) if c != 0 else 0 for c in coefs]
    return SteeringResult(
        model=model.info.name, prompt=spec.prompt, layer=plan.where.layer, site=spec.site,
        positions=spec.positions, vector_norm=float(plan.vector.norm()), coefs=coefs,
        target=target, foil=foil,
        baseline=None if value is None else float(value[0]),
        values=None if value is None else value[index].cpu().numpy().astype(np.float64),
        kl=kl[index].cpu().numpy().astype(np.float64),
        baseline_top=tops[0], steered_top=tuple(tops[i] for i in index),
        baseline_text=texts[0] if texts else None,
        texts=tuple(texts[i] for i in index) if texts else None,
        sampled=spec.sample,
        tokens=tuple(tuple(model.vocab.decode_one(t) for t in new_ids[i]) for i in [0, *index])
        if texts else None,
        margins=tuple(steps.rows()[i] for i in [0, *index]) if texts and steps else None,
        measure=None if metric is None else metrics.label(metric),
    )
