"""probes layer: attribution patching (AtP; Nanda 2023, Kramár et al. 2024): activation patching to
first order.

Patching the clean activation a_clean into the corrupted run changes the metric by about
``(a_clean - a_corrupted) . d metric / d a``, the gradient taken on the corrupted run. One
clean forward (memoised, as the exact sweep's) and one corrupted forward and backward give
every cell of the grid. The gradient with respect to each activation is that of a zero tensor
added at its site (an ``add`` edit), so backends need no gradient hooks of their own; it is
taken with ``torch.autograd.grad``, so the model's parameters collect no ``.grad``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .. import metrics
from ..backends.base import Edit
from ..errors import InterpError
from ..results import PatchingResult, token_position
from ..sites import PATCH_SITES, Site, all_sites
from .batching import paired_tokens
from .patching import Patching, activation_patching
from .runner import Runner


def attribution_patching(model: Runner, spec: Patching) -> PatchingResult:
    """``activation_patching``'s grid for ``spec``, estimated to first order from one backward
    pass.

    Each cell is ``corrupted + sum((clean_act - corrupted_act) * d metric / d act)`` over
    d_model, the gradient taken on the corrupted run; head_out with ``per_position=False``
    sums a head's cells over positions. Checks and layout are ``activation_patching``'s;
    ``metric`` must be differentiable (not ``"rank"``).
    """
    clean, corrupted, answer, foil, site = spec.clean, spec.corrupted, spec.answer, spec.foil, \
        spec.site
    per_position, layers, positions, metric = spec.per_position, spec.layers, spec.positions, \
        spec.metric
    if site not in PATCH_SITES:
        raise InterpError(f"site {site!r} cannot be patched: use one of {', '.join(PATCH_SITES)}")
    info = model.info
    clean_tokens, corrupted_tokens = paired_tokens(model, clean, corrupted)
    n_layers, n_pos, n_heads = info.n_layers, clean_tokens.length, info.n_heads
    clean_run = model.run(clean_tokens, read=all_sites(n_layers, (site,)))
    measure = metrics.build(metric, model.vocab, answer, foil, clean_run.logits[0, -1])
    swept_layers = range(n_layers) if layers is None else sorted(
        {info.check_layer(layer) for layer in layers})
    keep = sorted({token_position(clean_tokens.strs[0], p, clean) for p in positions or ()})
    heads = site == "head_out"
    with torch.inference_mode(False), torch.enable_grad():
        zeros = {(layer, head): torch.zeros(1, n_pos, info.d_model, device=info.device,
                                            requires_grad=True)
                 for layer in swept_layers for head in (range(n_heads) if heads else (None,))}
        edits = [Edit(Site(layer, site), zero, mode="add", head=head)
                 for (layer, head), zero in zeros.items()]
        run = model.forward(corrupted_tokens, read={e.site for e in edits}, edits=edits,
                            logits_to_keep=1, grad=True)
        measured = measure(run.logits[:, -1])
        if zeros and not measured.requires_grad:
            raise InterpError(
                f"metric {metrics.label(metric)} has no gradient: attribution patching needs a "
                "differentiable metric (logit_diff, logprob, prob, kl)")
        grads = dict(zip(zeros, torch.autograd.grad(measured.sum(), list(zeros.values())),
                         strict=True)) if zeros else {}
    corrupted_metric = float(measured.detach()[0])
    effect = np.full((n_layers, n_heads, n_pos) if heads else (n_layers, n_pos), np.nan)
    for layer in swept_layers:
        delta = (clean_run.acts[Site(layer, site)][0].double()
                 - run.acts[Site(layer, site)][0].double())  # [P, D] or [P, H, D]
        if heads:
            grad = torch.stack([grads[layer, h][0] for h in range(n_heads)], 1).double()
            effect[layer] = (delta * grad).sum(-1).T.cpu().numpy()  # [H, P]
        else:
            effect[layer] = (delta * grads[layer, None][0].double()).sum(-1).cpu().numpy()
    if heads and not per_position:
        effect = effect.sum(-1)  # a head patched at every position
    elif positions is not None:
        effect[..., np.setdiff1d(np.arange(n_pos), keep)] = np.nan
    return PatchingResult(
        model=info.name, site=site, clean=clean, corrupted=corrupted, answer=answer, foil=foil,
        clean_tokens=clean_tokens.strs[0], corrupted_tokens=corrupted_tokens.strs[0],
        clean_logit_diff=float(measure(clean_run.logits[:, -1])[0]),
        corrupted_logit_diff=corrupted_metric,
        patched=corrupted_metric + effect, heads=heads, per_position=per_position or not heads,
        metric=metrics.label(metric), method="attribution",
    )


def verify_top_k(model: Runner, estimate: PatchingResult, spec: Patching) -> PatchingResult:
    """``estimate`` with its ``spec.verify_top_k`` largest cells (by |estimated effect|)
    patched exactly, in one batched exact sweep over those cells (``PatchingResult.exact``)."""
    flat = estimate.patched.reshape(estimate.n_layers, -1)
    effect = np.abs(flat - estimate.corrupted_logit_diff)
    order = np.argsort(np.where(np.isnan(effect), -np.inf, effect), axis=None)[::-1]
    n = min(spec.verify_top_k, int(np.count_nonzero(~np.isnan(effect))))
    cells = frozenset((int(i) // flat.shape[1], int(i) % flat.shape[1]) for i in order[:n])
    exact = activation_patching(model, dataclasses.replace(
        spec, layers=None, positions=None, method="exact", verify_top_k=0, cells=cells))
    return dataclasses.replace(estimate, exact=exact.patched)


def estimated(model: Runner, spec: Patching) -> PatchingResult:
    """The attribution estimate ``spec`` asks for, with its top cells verified if asked."""
    result = attribution_patching(model, spec)
    return verify_top_k(model, result, spec) if spec.verify_top_k else result
