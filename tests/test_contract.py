"""The adapters' contract: same model, same numbers through TL, nnsight and raw HF hooks."""

from __future__ import annotations

import pytest
import torch

from pytest_interp.backends.base import COMPONENTS, Edit, Site, all_sites
from pytest_interp.backends.generate import greedy_generate
from pytest_interp.errors import SiteError

from .conftest import BACKENDS, SPECS, TINY_SPECS
from .hf_reference import hf_run

TOL = 1e-4
PROMPT = "When Mary and John went to the store, John gave a drink to"


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def _edits(d_model: int, layer: int):
    g = torch.Generator().manual_seed(1)
    replace = torch.randn(d_model, generator=g)
    add = torch.randn(d_model, generator=g)
    return replace, add


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("edited", [False, True], ids=["clean", "replace+add"])
def test_adapters_agree_with_raw_hf_on_every_site(spec, edited, load_backend, load_raw_hf):
    tl, nn = load_backend(spec, "transformer_lens"), load_backend(spec, "nnsight")
    raw = load_raw_hf(spec).model
    tokens = tl.tokenize(PROMPT)
    assert tokens == nn.tokenize(PROMPT)
    n_layers, d_model = tl.info.n_layers, tl.info.d_model
    layer = n_layers // 2
    replace, add = _edits(d_model, layer)
    edits, ref_kwargs = [], {}
    if edited:
        edits = [
            Edit(Site(layer, "resid_pre"), replace, positions=(3,)),
            Edit(Site(layer, "mlp_out"), add, mode="add", positions=(-1,)),
        ]
        ref_kwargs = dict(replace_resid_pre=(layer, 3, replace),
                          add_mlp_out=(layer, tokens.length - 1, add))
    sites = all_sites(n_layers, tl.info.components)
    ref_logits, ref_acts = hf_run(raw, tokens.tensor(), **ref_kwargs)
    runs = {"transformer_lens": tl.run(tokens, read=sites, edits=edits),
            "nnsight": nn.run(tokens, read=sites, edits=edits)}
    worst = {}
    for name, run in runs.items():
        worst[name, "logits"] = _max_diff(run.logits, ref_logits)
        for site in sites:
            worst[name, str(site)] = _max_diff(run.acts[site], ref_acts[site.layer, site.component])
    worst["tl-vs-nnsight", "logits"] = _max_diff(runs["transformer_lens"].logits,
                                                 runs["nnsight"].logits)
    bad = {k: v for k, v in worst.items() if v > TOL}
    assert not bad, f"max abs diff above {TOL}: {bad}"
    if edited:  # the edits really changed the run
        clean_logits, _ = hf_run(raw, tokens.tensor())
        assert _max_diff(clean_logits, ref_logits) > 1e-3


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("component", [c for c in COMPONENTS if c != "attn_pattern"])
@pytest.mark.parametrize("mode", ["replace", "add"])
@pytest.mark.slow
def test_adapters_agree_under_every_edit(spec, component, mode, load_backend):
    tl, nn = load_backend(spec, "transformer_lens"), load_backend(spec, "nnsight")
    tokens = tl.tokenize(PROMPT).repeat(2)
    layer = tl.info.n_layers - 2
    value = torch.randn(tl.info.d_model, generator=torch.Generator().manual_seed(2))
    edit = Edit(Site(layer, component), value, mode=mode, positions=(1, -2), rows=(1,),
                head=1 if component in ("head_out", "q_input", "k_input", "v_input") else None)
    if component == "resid_mid" and tl.info.parallel:  # one clear error
        for backend in (tl, nn):
            with pytest.raises(SiteError, match="has parallel blocks: attention and the MLP"):
                backend.run(tokens, edits=[edit])
        return
    sites = all_sites(tl.info.n_layers, tl.info.components)
    if component not in tl.info.components:  # an input site: read it too
        sites = (*sites, Site(layer, component))
    a = tl.run(tokens, read=sites, edits=[edit])
    b = nn.run(tokens, read=sites, edits=[edit])
    assert _max_diff(a.logits, b.logits) <= TOL
    for site in sites:
        assert _max_diff(a.acts[site], b.acts[site]) <= TOL, site
    clean = tl.run(tokens)
    changed = (a.logits - clean.logits).abs().amax(-1)
    assert changed[0].max() == 0, "row 0 was not edited and must not change"
    assert changed[1].max() > 0, "row 1 was edited and must change"
    if component != "resid_post":  # resid_post at L-2 still flows through later layers
        assert changed[1, 0] == 0, "a position before the edit must not change (causal)"


@pytest.mark.parametrize("spec", SPECS)
def test_edited_site_reads_back_the_edit(spec, load_backend):
    for backend in ("transformer_lens", "nnsight"):
        model = load_backend(spec, backend)
        tokens = model.tokenize(PROMPT)
        value = torch.full((model.info.d_model,), 0.5)
        for component in ("resid_pre", "resid_mid", "attn_out", "mlp_in", "mlp_out", "resid_post"):
            if component not in model.info.components:
                continue
            site = Site(1, component)
            run = model.run(tokens, read=[site], edits=[Edit(site, value, positions=(2,))])
            assert _max_diff(run.acts[site][0, 2], value) < 1e-3, (backend, component)
        site = Site(1, "head_out")
        run = model.run(tokens, read=[site], edits=[Edit(site, value, positions=(2,), head=0)])
        assert _max_diff(run.acts[site][0, 2, 0], value) == 0


@pytest.mark.parametrize("spec", SPECS)
def test_unembed_of_last_resid_post_is_the_logits(spec, load_backend):
    for backend in ("transformer_lens", "nnsight"):
        model = load_backend(spec, backend)
        tokens = model.tokenize(PROMPT)
        last = Site(model.info.n_layers - 1, "resid_post")
        run = model.run(tokens, read=[last])
        assert _max_diff(model.unembed(run.acts[last]), run.logits) <= TOL


@pytest.mark.parametrize("spec", SPECS)
def test_the_last_positions_logits_are_the_full_runs_from_a_contiguous_input(spec, load_backend):
    """logits_to_keep=k gives the full run's last k positions on a batch. HF slices the
    hidden states as a strided view; the unembedding gets them contiguous, for its fast kernel
    (benchmarks/unembedding.py), once however many backends wrap the model."""
    from pytest_interp.backends.base import Tokens

    for backend in ("transformer_lens", "nnsight"):
        model = load_backend(spec, backend)
        hf = model.bridge.original_model if backend == "transformer_lens" else model._hf
        head = hf.get_output_embeddings()
        assert len(head._forward_pre_hooks) == 1
        tokens = Tokens.stack([model.tokenize(p) for p in ("The cat sat on", "A dog ran to")])
        full = model.run(tokens).logits
        for keep in (1, 2):
            seen: list[bool] = []
            spy = head.register_forward_pre_hook(
                lambda module, args, seen=seen: seen.append(args[0].is_contiguous()))
            try:
                kept = model.run(tokens, logits_to_keep=keep).logits
            finally:
                spy.remove()
            assert seen == [True] and kept.shape[1] == keep
            assert _max_diff(kept, full[:, -keep:]) <= TOL


@pytest.mark.parametrize("spec", SPECS)
def test_generation_agrees_between_backends_and_with_hf(spec, load_backend, load_raw_hf):
    raw = load_raw_hf(spec)
    tokens = load_backend(spec).tokenize("The capital of France is")
    ref = raw.model.generate(tokens.tensor(), max_new_tokens=5, do_sample=False,
                             pad_token_id=raw.tokenizer.eos_token_id)
    for backend in ("transformer_lens", "nnsight"):
        out = greedy_generate(load_backend(spec, backend), tokens, max_new_tokens=5)
        assert list(out.ids[0]) == ref[0].tolist(), backend


def test_smollm2_knows_paris(load_backend):
    model = load_backend("smollm2-135m", "nnsight")
    run = model.run(model.tokenize("The capital of France is"))
    assert model.decode([int(run.logits[0, -1].argmax())]) == " Paris"


def _full_forward_generate(model, tokens, steps, edits):
    """Greedy decoding the slow way: the whole sequence through the model at every step."""
    from pytest_interp.backends.base import Tokens

    for _ in range(steps):
        nxt = model.run(tokens, edits=edits).logits[:, -1].argmax(-1).tolist()
        tokens = Tokens(tuple((*r, t) for r, t in zip(tokens.ids, nxt, strict=True)),
                        tuple((*s, "") for s in tokens.strs))
    return tokens.ids


@pytest.mark.parametrize("spec", TINY_SPECS)
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.slow
def test_cached_generation_with_edits_equals_full_forward_steps(spec, backend, load_backend):
    """The KV-cached, prefix-sharing generate is the full forward pass at every step."""
    model = load_backend(spec, backend)
    tokens = model.tokenize(PROMPT).repeat(3)
    d = model.info.d_model
    g = torch.Generator().manual_seed(3)
    layer = model.info.n_layers // 2
    row_edits = [Edit(Site(layer, "resid_post"), 4 * torch.randn(d, generator=g),
                      positions=(-3,), rows=(row,)) for row in (1, 2)]
    steer = Edit(Site(layer, "resid_pre"), torch.randn(d, generator=g), mode="add", rows=(2,))
    for edits in ([], row_edits, [*row_edits, steer]):
        out = greedy_generate(model, tokens, max_new_tokens=6, edits=edits)
        fixed = [e if e.positions is None else
                 Edit(e.site, e.value, positions=(tokens.length - 3,), rows=e.rows)
                 for e in edits]  # absolute, so the slow way's growing length keeps them
        assert out.ids == _full_forward_generate(model, tokens, 6, fixed)
        assert out.strs[0][:tokens.length] == tokens.strs[0]
    logits = model.run(tokens, edits=fixed).logits[:, -1]  # the edits act on rows 1 and 2
    assert (logits[1] - logits[0]).abs().max() > 1e-3 < (logits[2] - logits[0]).abs().max()


@pytest.mark.parametrize("spec", SPECS)
def test_input_sites_edit_one_head_or_the_mlp_alone_as_raw_hf(spec, load_backend, load_raw_hf):
    """An edit of one head's q/k/v input reaches that head's projection rows only (through
    the attention's norm), and an mlp_input edit reaches the MLP only: as a raw-HF splice."""
    from .hf_reference import hf_input_edit

    raw = load_raw_hf(spec).model
    tl = load_backend(spec, "transformer_lens")
    tokens = tl.tokenize(PROMPT)
    info = tl.info
    layer = info.n_layers // 2
    g = torch.Generator().manual_seed(3)
    cases = [("q_input", info.n_heads - 1, "add"), ("k_input", 0, "replace"),
             ("v_input", info.n_kv_heads - 1, "add"), ("mlp_input", None, "add")]
    worst = {}
    for component, head, mode in cases:
        value = torch.randn(info.d_model, generator=g)
        ref = hf_input_edit(raw, tokens.tensor(), layer=layer, component=component, head=head,
                            position=4, value=value, mode=mode)
        plain = hf_input_edit(raw, tokens.tensor(), layer=layer, component=component,
                              head=head, position=4, value=torch.zeros_like(value))
        assert (ref - plain).abs().max() > 1e-3, f"{component}: the edit changes nothing"
        edit = Edit(Site(layer, component), value, mode=mode, positions=(4,), head=head)
        for backend in BACKENDS:
            model = load_backend(spec, backend)
            reader = Site(layer, "resid_mid" if component == "mlp_input" and not info.parallel
                          else "resid_pre")
            run = model.run(tokens, edits=[edit], read=[Site(layer, component), reader])
            worst[backend, component] = _max_diff(run.logits, ref)
            want = run.acts[reader].clone()
            if component != "mlp_input":
                want = want.unsqueeze(2).repeat(1, 1, info.heads_of(component), 1)
                want[:, 4, head] = value if mode == "replace" else want[:, 4, head] + value
            else:
                want[:, 4] += value
            worst[backend, component, "read"] = _max_diff(run.acts[Site(layer, component)], want)
    bad = {k: v for k, v in worst.items() if v > TOL}
    assert not bad, f"{spec}: {bad}"
