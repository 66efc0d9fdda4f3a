"""The ``patchscope`` marker through pytest."""

from __future__ import annotations

import pytest

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

PATCHSCOPE_USAGE = (
    "@pytest.mark.patchscope(source, token, *, layer, expect, "
    "target='cat->cat; 135->135; hello->hello; ?->', target_layer=None, target_token='?', "
    "max_new_tokens=5, mode='all'" + DATASET_USAGE
)


@pytest.mark.slow
def test_patchscope_markers_on_smollm2(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        SOURCE = "Amazon's former CEO attended Oscars"

        @pytest.mark.patchscope(SOURCE, " CEO", layer=[0, 1], expect="CEO")
        @pytest.mark.patchscope(SOURCE, " CEO", layer=range(30), expect="CEO", mode="any")
        @pytest.mark.patchscope(SOURCE, ("CEO", 0), layer=1, target_layer=1, expect=["CEO"],
                                max_new_tokens=2)
        def test_ceo_is_readable_early():
            pass

        @pytest.mark.patchscope(SOURCE, " CEO", layer=[0, 2, 5], expect="CEO")
        def test_fails():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_fails _*",
        "patchscope: expected 'CEO' in the continuation at every layer (mode='all'); 2 of 3 "
        "missing it (source->target layer): 2->2, 5->5",
        "patchscope of ' CEO' (position 3) in \"Amazon's former CEO attended Oscars\" -> "
        "'cat->cat; 135->135; hello->hello; ?->' at ' ?' (position 17)",
        "  source  target     P('CE')  continuation",
        "       0       0      0.0797  'CEO;\\n\\n'",
        ">      2       2      0.0307  'exec(135'",
        ">      5       5      0.0168  'hello;\\n\\n#'",
    ])
    assert "Traceback" not in result.stdout.str()


def test_patchscope_on_the_other_backend(pytester):
    ini(pytester, model="tiny-random-gpt2", backend="nnsight")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.patchscope("The cat sat", " cat", layer=[0, 1, 2], target_token=-1,
                                expect="zzzz", mode="any")
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "patchscope: expected 'zzzz' in the continuation at some layer (mode='any'); none of 3 "
        "has it",
        "*at '->' (position 18)",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ('patchscope("The cat sat", " cat", layer=0, expect="cat", mode="grid")',
     "mode must be 'all' or 'any', got 'grid'"),
    ('patchscope("The cat sat", " cat", layer=0)',
     f"missing a required argument: 'expect'; usage: {PATCHSCOPE_USAGE}"),
    ('patchscope("The cat sat", " cat", layers=0, expect="cat")',
     f"unknown keyword 'layers' (did you mean 'layer'?); usage: {PATCHSCOPE_USAGE}"),
    ('patchscope("The cat sat", " cat", layer=[], expect="cat")',
     "layer must be an int or a non-empty list of ints, got []"),
])
def test_bad_patchscope_marker_is_a_collection_error(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


@pytest.mark.parametrize(("marker", "message"), [
    ('patchscope("The cat sat on the cat", " cat", layer=0, expect="cat")',
     "source token ' cat' occurs 2 times in 'The cat sat on the cat' (positions [[]1, 5[]]): pass "
     "(' cat', k) for the k-th occurrence or an int position"),
    ('patchscope("The cat sat", " dog", layer=0, expect="dog")',
     "source token ' dog' is not in 'The cat sat' (tokens: [[]'The', ' cat', ' sat'[]]): pass "
     "one of them or an int position"),
    ('patchscope("The cat sat", " cat", layer=0, expect="cat", target="no placeholder")',
     "target prompt 'no placeholder' has no '?' placeholder token (tokens: [[]'no', ' place', "
     "'holder'[]]): put ? where the hidden state goes, or pass target_token= one of its tokens "
     "or an int position"),
    ('patchscope("The cat sat", " cat", layer=[0, 3], expect="cat")',
     "layer 3 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 from "
     "the end)"),
    ('patchscope("The cat sat", " cat", layer=[0, 1], target_layer=[0, 1, 2], expect="cat")',
     "2 source layers but 3 target layers: pass as many target layers as source layers (or "
     "one), or mode='grid'"),
])
def test_patchscope_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker,
                                                                         message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


def test_patchscope_marker_is_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([f"{PATCHSCOPE_USAGE}: assert what a hidden state says*"])
