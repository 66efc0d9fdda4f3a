"""Activation patching and logit diffs: results, expectations, TransformerLens agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pytest_interp.errors import InterpError
from pytest_interp.kinds.logit_diff import LogitDiffExpectation
from pytest_interp.kinds.patching import PatchingExpectation
from pytest_interp.model import InterpModel
from pytest_interp.probes.batching import paired_tokens
from pytest_interp.results import PatchingResult

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"

TOY = PatchingResult(
    model="toy", site="resid_pre", clean="A B to", corrupted="A C to", answer=" B", foil=" C",
    clean_tokens=("A", " B", " to"), corrupted_tokens=("A", " C", " to"),
    clean_logit_diff=4.0, corrupted_logit_diff=-4.0,
    patched=np.array([[-4.0, 4.0, -4.0], [-4.0, 0.0, 2.0], [-4.0, -4.0, 4.0]]),
)


def test_recovery_and_grid_on_a_hand_built_result():
    assert TOY.recovery.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.5, 0.75], [0.0, 0.0, 1.0]]
    assert TOY.position_index(" B") == 1 and TOY.position_index(-1) == 2
    assert TOY.grid(mark=(1, 1)) == "\n".join([
        "resid_pre patching recovery (clean +4.000, corrupted -4.000: logit diff ' B' - ' C' at "
        "the last position); rows layer, columns position",
        "              A      B     to",
        "      0    0.00   1.00   0.00",
        ">     1    0.00 [0.50]   0.75",
        "      2    0.00   0.00   1.00",
    ])


def test_patching_failure_texts():
    def judge(**kwargs):
        return PatchingExpectation("A B to", "A C to", answer=" B", foil=" C", **kwargs).judge(TOY)

    assert judge(layer=0, position=1, min_recovery=0.8) is None
    text = judge(layer=1, position=" B", min_recovery=0.8)
    assert text.splitlines()[0] == (
        "activation_patching: resid_pre at layer 1, position 1 (' B') recovers 0.50 of the clean "
        "logit diff, expected min_recovery=0.8"
    )
    assert text.splitlines()[4] == ">     1    0.00 [0.50]   0.75"
    text = judge(position=-1, max_recovery=0.5)
    assert text.splitlines()[0] == (
        "activation_patching: resid_pre at layer 2, position -1 (' to') recovers 1.00 of the "
        "clean logit diff, expected max_recovery=0.5"
    )
    text = judge(position=1, peak_layer=(1, 2))
    assert text.splitlines()[0] == (
        "activation_patching: resid_pre recovery at position 1 (' B') peaks at layer 0 (1.00), "
        "expected peak_layer in (1, 2)"
    )
    assert text.splitlines()[3] == ">     0    0.00 [1.00]   0.00"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "no check given: pass min_recovery=, max_recovery= or peak_layer="),
    ({"site": "attn_pattern", "min_recovery": 0.5},
     "site 'attn_pattern' cannot be patched: use one of resid_pre, resid_mid, resid_post, "
     "attn_out, mlp_out, head_out"),
    ({"head": 1, "min_recovery": 0.5}, "head= only applies to site='head_out', not 'resid_pre'"),
    ({"site": "head_out", "position": 2, "min_recovery": 0.5},
     "site='head_out' with position= needs head= (which head)"),
    ({"layer": 0, "position": 1, "peak_layer": (0, 2)},
     "peak_layer= looks across layers: do not also pass layer="),
    ({"peak_layer": (0, 2)}, "peak_layer= needs position= (which column's peak)"),
    ({"position": 1, "peak_layer": 3}, "peak_layer must be a (low, high) pair of ints, got 3"),
    ({"min_recovery": float("inf")}, "min_recovery must be a finite number, got inf"),
])
def test_patching_expectation_combinations(kwargs, message):
    with pytest.raises(InterpError) as info:
        PatchingExpectation("a", "b", answer=" B", foil=" C", **kwargs)
    assert str(info.value) == message


def test_logit_diff_expectation_combinations():
    with pytest.raises(InterpError, match=r"^no check given: pass min= and/or max=$"):
        LogitDiffExpectation("p", answer=" a", foil=" b")
    with pytest.raises(InterpError, match=r"^min=3 is greater than max=1$"):
        LogitDiffExpectation("p", answer=" a", foil=" b", min=3, max=1)


def test_mismatched_lengths_show_both_tokenizations(smollm2):
    with pytest.raises(InterpError) as info:
        paired_tokens(smollm2, "The cat sat", "The big cat sat")
    assert str(info.value) == "\n".join([
        "clean and corrupted prompts must tokenize to the same length, got 3 and 4: reword one "
        "so positions line up",
        "  pos  clean            corrupted",
        "    0  'The'            'The'",
        "    1  ' cat'           ' big'",
        "    2  ' sat'           ' cat'",
        "    3  -                ' sat'",
    ])


def test_ioi_logit_diffs_on_smollm2(smollm2):
    clean = smollm2.logit_diff(CLEAN, " Mary", " John")
    corrupted = smollm2.logit_diff(CORRUPTED, " Mary", " John")
    print(f"\nIOI logit diff ' Mary' - ' John': clean {clean:.3f}, corrupted {corrupted:.3f}")
    assert clean > 3 and corrupted < -3


@pytest.mark.slow
def test_resid_pre_sweep_equals_transformer_lens(smollm2):
    """Our batched sweep vs TL's get_act_patch_resid_pre, cell by cell (1e-4).

    TL patches one (layer, position) per forward; to keep CI short it runs layers 0, 9, 20 and
    29 here (every position); benchmarks/bench_patching.py compares the full grid.
    """
    from transformer_lens.patching import get_act_patch_resid_pre

    ours = smollm2.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John")
    bridge = smollm2.backend.bridge
    clean, corrupted = smollm2.tokens(CLEAN).tensor(), smollm2.tokens(CORRUPTED).tensor()
    mary, john = smollm2.vocab.id(" Mary"), smollm2.vocab.id(" John")
    layers, n_pos = (0, 9, 20, 29), clean.shape[1]
    index = pd.DataFrame([(layer, pos) for layer in layers for pos in range(n_pos)],
                         columns=["layer", "pos"])
    with torch.inference_mode():
        _, clean_cache = bridge.run_with_cache(clean)
        theirs = get_act_patch_resid_pre(
            bridge, corrupted, clean_cache,
            lambda logits: (logits[:, -1, mary] - logits[:, -1, john]).mean(),
            index_axis_names=None, index_df=index,
        )
    theirs = theirs.cpu().numpy().reshape(len(layers), n_pos)
    diff = np.abs(ours.patched[list(layers)] - theirs).max()
    print(f"\nmax abs diff vs TransformerLens on {len(index)} patches: {diff:.2e}")
    assert diff <= 1e-4
    assert ours.recovery[0, -5] > 0.8  # the name lives at the name, early
    assert 24 <= int(ours.recovery[:, -1].argmax()) <= 29  # and moves to the end late


@pytest.mark.slow
def test_sweeps_are_identical_between_backends(smollm2, smollm2_nnsight):
    for site in ("resid_pre", "attn_out", "mlp_out"):
        a = smollm2.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John", site=site)
        b = smollm2_nnsight.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                                site=site)
        assert np.abs(a.patched - b.patched).max() <= 1e-4, site


@pytest.mark.parametrize(("site", "tl_name"), [
    ("attn_out", "get_act_patch_attn_out"), ("mlp_out", "get_act_patch_mlp_out"),
    ("head_out", "get_act_patch_attn_head_out_all_pos"),
])
def test_other_sites_equal_transformer_lens_on_a_tiny_model(load_backend, site, tl_name):
    import transformer_lens.patching as tl_patching

    model = InterpModel(load_backend("tiny-random-llama"))
    clean_text, corrupted_text = "The cat sat on the mat", "The dog sat on the mat"
    ours = model.activation_patching(clean_text, corrupted_text, answer=" mat", foil=" rug",
                                     site=site, per_position=False)
    a, f = model.vocab.id(" mat"), model.vocab.id(" rug")
    bridge = model.backend.bridge
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(model.tokens(clean_text).tensor())
        theirs = getattr(tl_patching, tl_name)(
            bridge, model.tokens(corrupted_text).tensor(), cache,
            lambda logits: (logits[:, -1, a] - logits[:, -1, f]).mean())
    assert np.abs(ours.patched - theirs.cpu().numpy()).max() <= 1e-4


def test_head_out_per_position_sweep_shape(load_backend):
    model = InterpModel(load_backend("tiny-random-gpt2"))
    result = model.activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in",
                                       site="head_out")
    assert result.patched.shape == (3, 4, 3)
    all_pos = model.activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in",
                                        site="head_out", per_position=False)
    assert all_pos.patched.shape == (3, 4)
    # position 0 is identical in both prompts: patching it cannot change anything
    assert np.all(result.patched[:, :, 0] == result.corrupted_logit_diff)


def test_restricted_sweep_equals_the_full_one_where_swept(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    args = ("The cat sat on the mat", "The dog sat on the mat")
    full = model.activation_patching(*args, answer=" mat", foil=" rug")
    part = model.activation_patching(*args, answer=" mat", foil=" rug", layers=[-1],
                                     positions=[" cat", -1])
    assert np.isnan(part.patched[:2]).all() and np.isnan(part.patched[2, [0, 2, 3, 4]]).all()
    assert np.abs(part.patched[2, [1, 5]] - full.patched[2, [1, 5]]).max() <= 1e-4
    assert part.grid().splitlines()[2].split() == ["0", "·", "·", "·", "·", "·", "·"]


def _whole_prompt_passes(patches, n_layers, n_pos, batch_size):
    """The sweep as it was before suffix-only recomputation: one pass per layer from that
    layer and from position 0."""
    passes = []
    for layer in sorted({p.layer for p in patches}):
        rows = [p for p in patches if p.layer == layer]
        passes += [(layer, 0, rows[lo:lo + batch_size]) for lo in range(0, len(rows), batch_size)]
    return passes


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gpt2", "tiny-random-gemma3"])
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_suffix_only_sweeps_equal_whole_prompt_sweeps(load_backend, monkeypatch, spec, backend):
    from pytest_interp.probes import patching

    model = InterpModel(load_backend(spec, backend))
    clean, corrupted = "The cat sat on the mat and then", "The dog sat on the mat and then"
    cases = [("resid_pre", True), ("attn_out", True), ("mlp_out", True), ("resid_post", True),
             ("head_out", True), ("head_out", False)]
    specs = [patching.Patching(clean, corrupted, answer=" the", foil=" a", site=site,
                               per_position=pp) for site, pp in cases]
    suffix = [patching.activation_patching(model, spec) for spec in specs]
    monkeypatch.setattr(patching, "_passes", _whole_prompt_passes)
    for (site, pp), spec, ours in zip(cases, specs, suffix, strict=True):
        whole = patching.activation_patching(model, spec)
        assert np.array_equal(np.isnan(ours.patched), np.isnan(whole.patched))
        assert np.nanmax(np.abs(ours.patched - whole.patched)) <= 1e-4, (site, pp)


def test_passes_cover_every_patch_once_from_their_lowest_layer_and_position(monkeypatch):
    from pytest_interp.probes import patching

    begins = [9, 3, 3, 12, 0, 7, 7, 7, 14]
    patches = [patching._Patch(layer, col, begin, begin, None, torch.zeros(1))
               for layer in (0, 1, 4, 5) for col, begin in enumerate(begins)]
    for cost, batch in ((0, 64), (32, 64), (10**6, 64), (32, 2)):
        monkeypatch.setattr(patching, "FORWARD_COST", cost)
        passes = patching._passes(patches, 6, 15, batch)
        seen = sorted((p.layer, p.col) for _, _, members in passes for p in members)
        assert seen == sorted((p.layer, p.col) for p in patches)
        for start, begin, members in passes:
            assert start <= min(p.layer for p in members)
            assert begin == min(p.begin for p in members)
            assert len(members) <= batch
        if cost == 0:  # passes are free: one per layer and distinct begin, nothing recomputed
            assert len(passes) == 4 * 6
            assert all(start == p.layer for start, _, members in passes for p in members)
        if cost == 10**6:  # passes are dear: all in one, from layer 0 and position 0
            assert [(start, begin) for start, begin, _ in passes] == [(0, 0)]
