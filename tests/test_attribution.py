"""Attribution patching: against plain autograd on raw HF, across backends, against exact
patching to first order, and SmolLM2's IOI grid ranked like the exact sweep's."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pytest_interp.backends.architectures import family_of
from pytest_interp.backends.base import Edit, Site
from pytest_interp.errors import InterpError
from pytest_interp.model import InterpModel
from pytest_interp.probes import attribution, patching
from pytest_interp.sites import PATCH_SITES

from .conftest import BACKENDS, TINY_SPECS


def attribution_patching(model, clean, corrupted, **options):
    """The estimate's probe on its spec (read here as a call with arguments)."""
    return attribution.attribution_patching(model, patching.Patching(clean, corrupted, **options))


def activation_patching(model, clean, corrupted, **options):
    """The exact sweep's probe on its spec."""
    return patching.activation_patching(model, patching.Patching(clean, corrupted, **options))

CLEAN, CORRUPTED = "The cat sat on the mat and then", "The dog sat on the mat and then"
ANSWER, FOIL = " the", " a"
CASES = [(site, True) for site in PATCH_SITES] + [("head_out", False)]
TOL = 1e-4


def _get(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


def hf_gradients(model, ids, site, metric):
    """``metric(last-position logits [V])`` of a raw HF run and, per layer, the activation at
    ``site`` with the metric's gradient with respect to it (plain autograd on the activation
    tensors; head_out's per-head outputs are made graph nodes of their own), [P, D] or
    [P, H, D]."""
    layout = family_of(model.config.architectures[0]).layout
    n_heads = model.config.num_attention_heads
    acts: dict[int, list[torch.Tensor]] = {}

    def leaf(module, args, output):  # the graph starts at the embeddings (weights are frozen)
        return output.detach().requires_grad_()

    def output_of(layer):
        def hook(module, args, output):
            acts[layer] = [output[0] if isinstance(output, tuple) else output]
        return hook

    def input_of(layer):
        def hook(module, args, kwargs):
            acts[layer] = [args[0] if args else kwargs["hidden_states"]]
        return hook

    def heads_of(layer, o_proj):
        def hook(module, args, output):  # value unchanged; each head's output is a node
            w = o_proj.weight if layout.o_proj_in_out else o_proj.weight.T  # [H*Dh, D]
            z = args[0].detach().reshape(*args[0].shape[:2], n_heads, -1)  # no second path
            w3 = w.reshape(n_heads, -1, w.shape[-1])
            acts[layer] = [(z[:, :, h] @ w3[h]).requires_grad_() for h in range(n_heads)]
            total = torch.stack(acts[layer]).sum(0)
            return output + (total - total.detach())
        return hook

    handles = [model.get_input_embeddings().register_forward_hook(leaf)]
    for layer, block in enumerate(_get(model, layout.blocks)):
        if site == "resid_pre":
            handles.append(block.register_forward_pre_hook(input_of(layer), with_kwargs=True))
        elif site == "resid_mid":
            handles.append(_get(block, layout.mid).register_forward_pre_hook(
                input_of(layer), with_kwargs=True))
        elif site == "head_out":
            o_proj = _get(block, f"{layout.attn}.{layout.o_proj}")
            handles.append(o_proj.register_forward_hook(heads_of(layer, o_proj)))
        else:
            module = {"resid_post": block, "attn_out": _get(block, layout.attn_out),
                      "mlp_out": _get(block, layout.mlp_out)}[site]
            handles.append(module.register_forward_hook(output_of(layer)))
    try:
        with torch.enable_grad():
            value = metric(model(ids).logits[0, -1])
            layers = sorted(acts)
            grads = torch.autograd.grad(value, [a for layer in layers for a in acts[layer]])
    finally:
        for handle in handles:
            handle.remove()
    out, i = {}, 0
    for layer in layers:
        n = len(acts[layer])
        pair = [torch.stack(x, 2)[0] if site == "head_out" else x[0][0]
                for x in (acts[layer], grads[i:i + n])]
        out[layer] = tuple(t.detach().double() for t in pair)
        i += n
    return float(value.detach()), out


def hf_attribution(model, clean_ids, corrupted_ids, site, per_position, metric):
    """The attribution grid computed from ``hf_gradients``."""
    _, clean = hf_gradients(model, clean_ids, site, metric)
    corrupted_metric, corrupted = hf_gradients(model, corrupted_ids, site, metric)
    grid = np.stack([((clean[layer][0] - act) * grad).sum(-1).numpy()
                     for layer, (act, grad) in sorted(corrupted.items())])  # [L, P(, H)]
    if site == "head_out":
        grid = grid.transpose(0, 2, 1)
        if not per_position:
            grid = grid.sum(-1)
    return corrupted_metric + grid


def logit_diff_of(model):
    a, f = model.vocab.id(ANSWER), model.vocab.id(FOIL)
    return lambda logits: logits[a] - logits[f]


@pytest.mark.parametrize(("site", "per_position"), CASES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gpt2", "tiny-random-gemma3"])
def test_grid_equals_plain_autograd_on_raw_hf(load_backend, load_raw_hf, spec, backend, site,
                                              per_position):
    model = InterpModel(load_backend(spec, backend))
    ours = attribution_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site,
                                per_position=per_position)
    theirs = hf_attribution(load_raw_hf(spec).model, model.tokens(CLEAN).tensor(),
                            model.tokens(CORRUPTED).tensor(), site, per_position,
                            logit_diff_of(model))
    exact = activation_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site,
                                per_position=per_position)
    assert ours.patched.shape == exact.patched.shape == theirs.shape
    assert np.abs(ours.patched - theirs).max() <= TOL
    assert ours.heads == exact.heads and ours.per_position == exact.per_position
    assert ours.clean_tokens == exact.clean_tokens and ours.metric == exact.metric
    assert abs(ours.clean_logit_diff - exact.clean_logit_diff) <= TOL
    assert abs(ours.corrupted_logit_diff - exact.corrupted_logit_diff) <= TOL
    if per_position:  # position 0 is the same token in both: no patch there changes anything
        assert np.all(ours.patched[..., 0] == ours.corrupted_logit_diff)


@pytest.mark.parametrize("metric", ["logprob", "prob", "kl"])
def test_other_metrics_equal_plain_autograd_on_raw_hf(load_backend, load_raw_hf, metric):
    model = InterpModel(load_backend("tiny-random-llama", "nnsight"))
    a = model.vocab.id(ANSWER)
    reference = model.run(CLEAN).logits[0, -1].log_softmax(-1)
    fn = {"logprob": lambda logits: logits.log_softmax(-1)[a],
          "prob": lambda logits: logits.softmax(-1)[a],
          "kl": lambda logits: (reference.exp() * (reference - logits.log_softmax(-1))).sum()}
    for site in ("resid_pre", "head_out"):
        with torch.inference_mode():  # a caller's inference mode does not stop the gradient
            ours = attribution_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=None,
                                        site=site, metric=metric)
        theirs = hf_attribution(load_raw_hf("tiny-random-llama").model,
                                model.tokens(CLEAN).tensor(), model.tokens(CORRUPTED).tensor(),
                                site, True, fn[metric])
        assert np.abs(ours.patched - theirs).max() <= TOL, site


@pytest.mark.parametrize("spec", TINY_SPECS)
@pytest.mark.slow
def test_backends_agree(load_backend, spec):
    tl, nn = (InterpModel(load_backend(spec, backend)) for backend in BACKENDS)
    for site, per_position in CASES:
        if site == "resid_mid" and tl.info.parallel:
            continue
        a, b = (attribution_patching(m, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site,
                                     per_position=per_position) for m in (tl, nn))
        assert np.abs(a.patched - b.patched).max() <= TOL, (site, per_position)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("site", "head"), [("resid_pre", None), ("mlp_out", None),
                                            ("head_out", 1)])
def test_estimate_is_the_exact_patch_to_first_order(load_backend, backend, site, head):
    """Patch corrupted + eps * (clean - corrupted) at one cell: at eps = 1 that is the
    exact sweep's cell; as eps -> 0 the metric's slope (patched - corrupted) / eps tends to
    the attribution estimate, its error shrinking like eps."""
    model = InterpModel(load_backend("tiny-random-gpt2", backend))
    layer, pos = 1, 1  # the changed token
    ours = attribution_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site)
    exact = activation_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site)
    cell = (layer, pos) if head is None else (layer, head, pos)
    corrupted_tokens = model.tokens(CORRUPTED)
    clean_act = model.run(CLEAN, read=[Site(layer, site)]).acts[Site(layer, site)][0, pos]
    corrupted_act = model.run(corrupted_tokens, read=[Site(layer, site)]).acts[
        Site(layer, site)][0, pos]
    base, estimate = exact.corrupted_logit_diff, ours.patched[cell] - ours.corrupted_logit_diff
    a, f = model.vocab.id(ANSWER), model.vocab.id(FOIL)
    errors = []
    for eps in (1.0, 0.1, 0.01):
        value = corrupted_act + eps * (clean_act - corrupted_act)
        if head is not None:
            value = value[head]
        logits = model.forward(corrupted_tokens, logits_to_keep=1, edits=[
            Edit(Site(layer, site), value, positions=(pos,), head=head)]).logits[0, -1]
        patched = float(logits[a] - logits[f])
        if eps == 1.0:
            assert abs(patched - exact.patched[cell]) <= TOL
        errors.append(abs((patched - base) / eps - estimate))
    assert abs(estimate) > 0.01  # the cell matters
    assert errors[2] <= 0.02 * abs(estimate), errors  # within 2% at eps = 0.01
    assert errors[2] <= 0.25 * errors[1] + 5e-5, errors  # ~eps (float32 noise: ~2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_parameter_grads_and_later_runs_unchanged(load_backend, backend):
    model = InterpModel(load_backend("tiny-random-llama", backend))
    tokens = model.tokens(CORRUPTED)
    before = model.forward(tokens).logits
    root = model.backend.bridge if backend == "transformer_lens" else model.backend._hf
    params = list(root.parameters())
    assert params
    for p in params:  # let the weights take part in autograd: they must still collect nothing
        p.requires_grad_(True)
    try:
        for site, per_position in CASES:
            attribution_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, site=site,
                                 per_position=per_position)
    finally:
        for p in params:
            p.requires_grad_(False)
    assert all(p.grad is None for p in params)
    after = model.forward(tokens)
    assert torch.equal(after.logits, before) and not after.logits.requires_grad
    assert after.logits.is_inference()


def test_restricted_grid_has_the_exact_sweeps_nans(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    for site, per_position in (("resid_pre", True), ("head_out", True), ("head_out", False)):
        kwargs = dict(answer=ANSWER, foil=FOIL, site=site, per_position=per_position)
        full = attribution_patching(model, CLEAN, CORRUPTED, **kwargs)
        restrict = dict(layers=[-1, 0], positions=[" cat", -1])
        part = attribution_patching(model, CLEAN, CORRUPTED, **kwargs, **restrict)
        exact = activation_patching(model, CLEAN, CORRUPTED, **kwargs, **restrict)
        assert np.array_equal(np.isnan(part.patched), np.isnan(exact.patched)), site
        swept = ~np.isnan(part.patched)
        assert np.abs(part.patched[swept] - full.patched[swept]).max() <= TOL
        assert np.isnan(attribution_patching(model, CLEAN, CORRUPTED, **kwargs,
                                             layers=[]).patched).all()


def test_errors_are_activation_patchings(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    for kwargs in ({"site": "attn_pattern"}, {"layers": [7]}, {"positions": [" cow"]},
                   {"foil": None}):
        args = {"answer": ANSWER, "foil": FOIL, **kwargs}
        with pytest.raises(InterpError) as exact:
            activation_patching(model, CLEAN, CORRUPTED, **args)
        with pytest.raises(InterpError) as ours:
            attribution_patching(model, CLEAN, CORRUPTED, **args)
        assert str(ours.value) == str(exact.value)
    with pytest.raises(InterpError) as ours:
        attribution_patching(model, "The cat sat", "The big cat sat", answer=ANSWER, foil=FOIL)
    assert str(ours.value).startswith("clean and corrupted prompts must tokenize to the same")
    with pytest.raises(InterpError, match=r"^metric rank has no gradient: attribution patching"):
        attribution_patching(model, CLEAN, CORRUPTED, answer=ANSWER, foil=None, metric="rank")


IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.mark.slow
def test_ioi_grid_ranks_like_the_exact_sweep_on_smollm2(smollm2):
    from scipy.stats import spearmanr

    rho = {}
    for site, per_position in (("resid_pre", True), ("head_out", False)):
        kwargs = dict(answer=" Mary", foil=" John", site=site, per_position=per_position)
        smollm2.forget()
        start = time.perf_counter()
        ours = attribution_patching(smollm2, IOI_CLEAN, IOI_CORRUPTED, **kwargs)
        middle = time.perf_counter()
        smollm2.forget()
        exact = activation_patching(smollm2, IOI_CLEAN, IOI_CORRUPTED, **kwargs)
        end = time.perf_counter()
        swept = ~np.isnan(exact.patched)
        assert np.array_equal(swept, ~np.isnan(ours.patched))
        rho[site] = spearmanr(ours.patched[swept], exact.patched[swept]).statistic
        print(f"\n{site} (per_position={per_position}): Spearman rho {rho[site]:.3f}, "
              f"attribution {middle - start:.2f}s, exact {end - middle:.2f}s")
    assert rho["resid_pre"] >= 0.8


def test_method_attribution_and_verify_top_k_through_the_model(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    kwargs = dict(answer=ANSWER, foil=FOIL)
    estimate = model.activation_patching(CLEAN, CORRUPTED, **kwargs, method="attribution")
    assert estimate.method == "attribution" and estimate.estimate and estimate.exact is None
    direct = attribution_patching(model, CLEAN, CORRUPTED, **kwargs)
    assert np.array_equal(estimate.patched, direct.patched, equal_nan=True)
    assert "[attribution estimate, not verified]" in estimate.grid().splitlines()[0]
    exact = model.activation_patching(CLEAN, CORRUPTED, **kwargs)
    assert exact.method == "exact" and not exact.estimate and exact.how == ""

    verified = model.activation_patching(CLEAN, CORRUPTED, **kwargs, method="attribution",
                                         verify_top_k=3)
    assert np.array_equal(verified.patched, estimate.patched, equal_nan=True)
    assert verified.exact is not None
    done = ~np.isnan(verified.exact)
    assert done.sum() == 3
    effect = np.abs(estimate.patched - estimate.corrupted_logit_diff)
    assert effect[done].min() >= np.nanmax(np.where(done, np.nan, effect))  # the 3 largest
    assert np.abs(verified.exact[done] - exact.patched[done]).max() <= TOL
    errors = verified.estimate_errors
    assert np.abs(errors - (verified.recovery - exact.recovery)[done]).max() <= TOL
    assert verified.grid().splitlines()[0].startswith(
        f"resid_pre patching recovery [attribution estimate; its 3 largest cells patched "
        f"exactly: max |error| {np.abs(errors).max():.2f} recovery] (clean ")

    heads = model.activation_patching(CLEAN, CORRUPTED, **kwargs, site="head_out",
                                      per_position=False, method="attribution",
                                      verify_top_k=100)  # more than the 12 cells: all
    exact_heads = model.activation_patching(CLEAN, CORRUPTED, **kwargs, site="head_out",
                                            per_position=False)
    assert heads.exact is not None
    assert np.abs(heads.exact - exact_heads.patched).max() <= TOL


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "gradient"}, "method must be one of exact, attribution, got 'gradient'"),
    ({"verify_top_k": 2}, "verify_top_k= checks an attribution estimate against exact "
                          "patching: pass method='attribution' too"),
    ({"method": "attribution", "verify_top_k": True}, "verify_top_k must be an int >= 0, "
                                                      "got True"),
    ({"method": "attribution", "metric": "rank"}, "metric rank has no gradient: attribution "
     "patching needs a differentiable metric (logit_diff, logprob, prob, kl)"),
])
def test_bad_method_arguments(load_backend, kwargs, message):
    model = InterpModel(load_backend("tiny-random-llama"))
    with pytest.raises(InterpError) as error:
        model.activation_patching(CLEAN, CORRUPTED, answer=ANSWER, foil=FOIL, **kwargs)
    assert str(error.value) == message
