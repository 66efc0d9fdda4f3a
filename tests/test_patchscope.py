"""Patchscopes: token lookup, hand-built results, batching, and agreement with raw HF hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp.errors import InterpError, SiteError
from pytest_interp.kinds.patchscope import PatchscopeExpectation
from pytest_interp.model import InterpModel
from pytest_interp.results import PatchscopeResult, find_token
from pytest_interp.settings import IDENTITY_PROMPT

from .hf_reference import hf_patchscope

SOURCE = "Amazon's former CEO attended Oscars"
TOKENS = ("Amazon", "'s", " former", " CEO", " the", " CEO", "?")


# ---------------------------------------------------------------------------
# Finding the token


def test_find_token_by_string_index_and_occurrence():
    assert find_token(TOKENS, "'s", "p") == 1
    assert find_token(TOKENS, "former", "p") == 2  # surrounding spaces ignored if no exact hit
    assert find_token(TOKENS, ("CEO", 0), "p") == 3
    assert find_token(TOKENS, (" CEO", -1), "p") == 5
    assert find_token(TOKENS, -1, "p") == 6
    assert find_token(TOKENS, "?", "p", "target") == 6


@pytest.mark.parametrize(("spec", "message"), [
    (" CEO", "source token ' CEO' occurs 2 times in 'p' (positions [3, 5]): pass (' CEO', k) "
             "for the k-th occurrence or an int position"),
    (" Oscars", "source token ' Oscars' is not in 'p' (tokens: ['Amazon', \"'s\", ' former', "
                "' CEO', ' the', ' CEO', '?']): pass one of them or an int position"),
    ((" CEO", 2), "source token ' CEO' occurs 2 times in 'p', so occurrence 2 does not exist: "
                  "use 0..1 or -2..-1"),
    (7, "source position 7 is outside the 7-token prompt 'p': use 0..6 or -7..-1, or a token "
        "string"),
    ((" CEO",), "a source token must be an int, a string or (string, k), got (' CEO',)"),
])
def test_find_token_errors_name_the_fix(spec, message):
    with pytest.raises(SiteError) as err:
        find_token(TOKENS, spec, "p")
    assert str(err.value) == message


# ---------------------------------------------------------------------------
# Hand-built results and expectations: exact failure text


def _result(continuations=("CEO;\n", "exec(1", " hello")) -> PatchscopeResult:
    return PatchscopeResult(
        model="m", source=SOURCE, source_tokens=("Amazon", "'s", " former", " CEO"),
        source_position=3, target="x ?->", target_tokens=("x", " ?", "->"), target_position=1,
        pairs=((0, 0), (1, 1), (2, 2)), continuations=continuations,
        token_ids=((1,), (2,), (3,)), expected="CE", expected_prob=(0.5, 0.25, 0.0),
    )


def test_result_lookup_and_table():
    result = _result()
    assert result.text(1) == "exec(1"
    assert result.prob(0, 0) == 0.5
    assert result.texts()[(2, 2)] == " hello"
    assert result.table([1]).splitlines() == [
        "patchscope of ' CEO' (position 3) in \"Amazon's former CEO attended Oscars\" -> "
        "'x ?->' at ' ?' (position 1)",
        "  source  target     P('CE')  continuation",
        "       0       0      0.5000  'CEO;\\n'",
        ">      1       1      0.2500  'exec(1'",
        "       2       2      0.0000  ' hello'",
    ]
    with pytest.raises(SiteError) as err:
        result.text(3)
    assert str(err.value) == ("no single patchscope row for layers 3->? (swept: 0->0, 1->1, "
                              "2->2): pass a swept source layer and its target_layer")


def test_expectation_all_and_any():
    result = _result()
    every = PatchscopeExpectation(SOURCE, " CEO", layer=[0, 1, 2], expect="CEO")
    assert every.judge(result).splitlines()[0] == (
        "patchscope: expected 'CEO' in the continuation at every layer (mode='all'); 2 of 3 "
        "missing it (source->target layer): 1->1, 2->2")
    assert every.judge(result).splitlines()[4:] == [
        ">      1       1      0.2500  'exec(1'", ">      2       2      0.0000  ' hello'"]
    assert PatchscopeExpectation(SOURCE, " CEO", layer=[0, 1, 2], expect="CEO",
                                 mode="any").judge(result) is None
    assert PatchscopeExpectation(SOURCE, " CEO", layer=0, expect=["CEO", "exec", " hello "]
                                 ).judge(result) is None
    none = PatchscopeExpectation(SOURCE, " CEO", layer=range(3), expect="Jeff", mode="any")
    assert none.layer == (0, 1, 2)
    assert none.judge(result).splitlines()[0] == (
        "patchscope: expected 'Jeff' in the continuation at some layer (mode='any'); none of 3 "
        "has it")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(layer=[]), "layer must be an int or a non-empty list of ints, got []"),
    (dict(layer="3"), "layer must be an int or a non-empty list of ints, got '3'"),
    (dict(layer=0, expect=" "), "expect must be a non-blank string or a list of them, got ' '"),
    (dict(layer=0, expect=[]), "expect must be a non-blank string or a list of them, got []"),
    (dict(layer=0, mode="most"), "mode must be 'all' or 'any', got 'most'"),
    (dict(layer=0, max_new_tokens=0), "max_new_tokens must be >= 1, got 0"),
    (dict(layer=0, token=None),
     "token must be a token string, an int position or (token string, k), got None"),
    (dict(layer=0, target_layer=[0.5]),
     "target_layer must be an int or a non-empty list of ints, got [0.5]"),
])
def test_expectation_rejects_bad_arguments(kwargs, message):
    args = dict(source=SOURCE, token=" CEO", expect="CEO") | kwargs
    with pytest.raises(InterpError) as err:
        PatchscopeExpectation(**args)
    assert str(err.value) == message


# ---------------------------------------------------------------------------
# Tiny models: batching is exact, mappings, errors


@pytest.fixture(scope="module", params=["tiny-random-llama", "tiny-random-gpt2"])
def tiny(request, load_backend):
    return InterpModel(load_backend(request.param))


def _reference(model: InterpModel, raw, pairs, *, source=SOURCE, target=IDENTITY_PROMPT,
               source_pos=3, target_pos=17, steps=5):
    src, tgt = list(model.tokens(source).ids[0]), list(model.tokens(target).ids[0])
    eos = raw.tokenizer.eos_token_id
    return [tuple(hf_patchscope(raw.model, src, source_pos, s, tgt, target_pos % len(tgt), t,
                                steps, eos)) for s, t in pairs]


def test_batched_grid_equals_raw_hf_per_pair(tiny, load_raw_hf):
    """Patched at the last target position, so every pair decodes differently."""
    raw = load_raw_hf(tiny.info.name)
    result = tiny.patchscope_sweep(SOURCE, " CEO", mode="grid", target_token=-1)
    assert result.pairs == tuple((s, t) for s in range(3) for t in range(3))
    reference = _reference(tiny, raw, result.pairs, target_pos=-1)
    for ours, ref in zip(result.token_ids, reference, strict=True):
        assert ours[:len(ref)] == ref
    assert len(set(result.token_ids)) > 3
    assert result.continuations[4] == tiny.backend.decode(result.token_ids[4])


def test_pairs_mode_and_single_layer(tiny):
    grid = tiny.patchscope_sweep(SOURCE, " CEO", mode="grid", target_token=-1)
    pairs = tiny.patchscope_sweep(SOURCE, " CEO", layers=[0, 2], target_layers=[1, -1],
                                  target_token=-1)
    assert pairs.pairs == ((0, 1), (2, 2))
    assert pairs.text(0, 1) == grid.text(0, 1) and pairs.text(2) == grid.text(2, 2)
    one = tiny.patchscope(SOURCE, ("CEO", 0), layer=-1, target_layer=0, target_token=-1)
    assert one.pairs == ((2, 0),) and one.text(2) == grid.text(2, 0)
    assert tiny.patchscope(SOURCE, " CEO", layer=-1, target_layer=0, target_token=-1) is \
        tiny.patchscope(SOURCE, " CEO", layer=-1, target_layer=0, target_token=-1)  # memoised


def test_both_backends_give_the_same_ids(load_backend):
    results = [InterpModel(load_backend("tiny-random-llama", b)).patchscope_sweep(
        SOURCE, " CEO", mode="grid", target_token=-1, expected=" the")
        for b in ("transformer_lens", "nnsight")]
    assert results[0].token_ids == results[1].token_ids
    np.testing.assert_allclose(results[0].expected_prob, results[1].expected_prob, atol=1e-5)


def test_mappings(tiny):
    d = tiny.info.d_model
    plain = tiny.patchscope(SOURCE, " CEO", layer=[0, 1], target_token=-1)
    identity = tiny.patchscope(SOURCE, " CEO", layer=[0, 1], target_token=-1,
                               mapping=torch.eye(d))
    assert identity.token_ids == plain.token_ids
    assert tiny.patchscope(SOURCE, " CEO", layer=[0, 1], target_token=-1,
                           mapping=lambda h: h.clone()).token_ids == plain.token_ids
    scaled = tiny.patchscope(SOURCE, " CEO", layer=[0, 1], target_token=-1,
                             mapping=np.eye(d, dtype=np.float32) * -40)
    assert scaled.token_ids != plain.token_ids
    with pytest.raises(InterpError) as err:
        tiny.patchscope(SOURCE, " CEO", layer=0, mapping=lambda h: h[:4])
    assert str(err.value) == (f"the mapping returned vectors of shape [4], expected [{d}] "
                              "(the target model's d_model)")
    with pytest.raises(InterpError) as err:
        tiny.patchscope(SOURCE, " CEO", layer=0, mapping=torch.eye(3))
    assert str(err.value) == (f"a linear mapping must be a [d_model, d_model] = [{d}, {d}] "
                              "matrix, got [3, 3]")


def test_errors_name_the_fix(tiny):
    with pytest.raises(InterpError) as err:
        tiny.patchscope_sweep(SOURCE, " CEO", layers=[0, 1, 2], target_layers=[0, 1])
    assert str(err.value) == ("3 source layers but 2 target layers: pass as many target layers "
                              "as source layers (or one), or mode='grid'")
    with pytest.raises(SiteError) as err:
        tiny.patchscope(SOURCE, " CEO", layer=3)
    assert str(err.value) == (f"layer 3 is out of range for {tiny.info.name} with 3 layers: use "
                              "0..2 (or -3..-1 from the end)")
    with pytest.raises(SiteError) as err:
        tiny.patchscope(SOURCE, " CEO", layer=0, target="no placeholder here")
    assert str(err.value).startswith("target prompt 'no placeholder here' has no '?' placeholder")


# ---------------------------------------------------------------------------
# SmolLM2: the paper's example, and agreement with raw HF hooks


def test_smollm2_decodes_ceo_at_early_layers(smollm2):
    result = smollm2.patchscope(SOURCE, " CEO", layer=[0, 1], expected="CEO")
    assert result.target_tokens[result.target_position] == " ?"
    for layer in (0, 1):
        assert result.text(layer).startswith("CEO"), result.table()
    assert result.expected == "CE"


@pytest.mark.slow
def test_smollm2_every_layer_equals_raw_hf_hooks(smollm2, smollm2_nnsight, load_raw_hf):
    raw = load_raw_hf("smollm2-135m")
    pairs = [(layer, layer) for layer in range(30)] + [(3, 0), (0, 12), (20, 5)]
    sources, targets = zip(*pairs, strict=True)
    ours = smollm2.patchscope_sweep(SOURCE, " CEO", layers=sources, target_layers=targets)
    reference = _reference(smollm2, raw, pairs)
    for pair, text, ref in zip(pairs, ours.continuations, reference, strict=True):
        assert len(ref) == 5
        assert text == raw.tokenizer.decode(ref), pair
    other = smollm2_nnsight.patchscope_sweep(SOURCE, " CEO", layers=sources,
                                             target_layers=targets)
    assert other.token_ids == ours.token_ids


def test_progress_bar_only_on_a_terminal(monkeypatch):
    import io
    import sys

    from pytest_interp.progress import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, shown in ((io.StringIO(), False), (Tty(), True)):
        monkeypatch.setattr(sys, "__stderr__", stream)
        assert list(progress(range(3), total=3, desc="patchscope")) == [0, 1, 2]
        assert ("patchscope" in stream.getvalue()) is shown
    assert list(progress(range(1), total=1, desc="x")) == [0]  # one step: no bar


def test_obvs_style_contexts_equal_the_facade(tiny):
    from pytest_interp.probes.patchscope import (
        Patchscope,
        SourceContext,
        TargetContext,
        patchscope,
    )

    source = SourceContext(SOURCE, " CEO", layer=1)
    target = TargetContext(position=-1, layer=0, max_new_tokens=4)
    via_contexts = patchscope(tiny, Patchscope.of(source, target))
    via_facade = tiny.patchscope(SOURCE, " CEO", layer=1, target_layer=0, target_token=-1,
                                 max_new_tokens=4)
    assert via_contexts.pairs == via_facade.pairs == ((1, 0),)
    assert via_contexts.token_ids == via_facade.token_ids
