"""The ``logit_diff`` and ``activation_patching`` markers through pytest."""

from __future__ import annotations

import pytest

from .test_plugin import _ini, _preload_libraries, assert_collection_error  # noqa: F401

pytest_plugins = ["pytester"]

PATCHING_USAGE = (
    "@pytest.mark.activation_patching(clean, corrupted, *, answer, foil, site='resid_pre', "
    "layer=None, position=None, head=None, min_recovery=None, max_recovery=None, "
    "peak_layer=None)"
)


def test_ioi_markers_on_smollm2(pytester):
    _ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        CLEAN = "When Mary and John went to the store, John gave a drink to"
        CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
        IOI = dict(answer=" Mary", foil=" John")

        @pytest.mark.logit_diff(CLEAN, **IOI, min=3)
        @pytest.mark.logit_diff(CORRUPTED, **IOI, max=-3)
        @pytest.mark.activation_patching(CLEAN, CORRUPTED, **IOI, site="resid_pre", layer=0,
                                         position=-5, min_recovery=0.8)
        @pytest.mark.activation_patching(CLEAN, CORRUPTED, **IOI, position=" to",
                                         peak_layer=(24, 29))
        @pytest.mark.activation_patching(CLEAN, CORRUPTED, **IOI, layer=5, position=" gave",
                                         max_recovery=0.1)
        def test_ioi_name_lives_at_the_name_early():
            pass

        @pytest.mark.logit_diff(CLEAN, **IOI, min=8)
        @pytest.mark.activation_patching(CLEAN, CORRUPTED, **IOI, position=" John",
                                         peak_layer=(20, 29))
        def test_fails():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_fails _*",
        "logit_diff: ' Mary' - ' John' at the last position of 'When Mary and John went to the "
        "store, John gave a drink to' is 6.120, expected >= 8 (min=8)",
        "  next-token top-5: ' Mary' 0.92, ' the' 0.02, ' his' 0.01, ' a' 0.01, ' her' 0.00",
        "",
        "activation_patching: resid_pre recovery at position 9 (' John') peaks at layer 16 "
        "(1.01), expected peak_layer in (20, 29)",
        "resid_pre patching recovery (clean +6.120, corrupted -5.485: logit diff ' Mary' - "
        "' John' at the last position); rows layer, columns position",
        "           When   Mary    and   John   went     to    the  store      ,   John   gave  "
        "    a  drink     to",
        "*",
        ">    16    0.00   0.00   0.00   0.00   0.00   0.00   0.00   0.00   0.00 [1.01]   0.00  "
        " 0.00  -0.00  -0.01",
    ])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize(("marker", "message"), [
    ('activation_patching("The cat sat", "The big cat sat", answer=" on", foil=" in", '
     'layer=0, min_recovery=0.5)',
     "clean and corrupted prompts must tokenize to the same length, got 3 and 4: reword one so "
     "positions line up"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'position=" mat", min_recovery=0.5)',
     "token ' mat' is not in the clean prompt 'The cat sat' (tokens: [[]'The', ' cat', "
     "' sat'[]]): pass one of them or an int position"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'site="head_out", head=4, min_recovery=0.5)',
     "head 4 is out of range for tiny-random-llama with 4 heads: use 0..3"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'position=1, peak_layer=(0, 5))',
     "peak_layer bound 5 is out of range for tiny-random-llama with 3 layers: use 0..2 (or "
     "-3..-1 from the end)"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'min_recov=0.5)',
     f"unknown keyword 'min_recov' (did you mean 'min_recovery'?); usage: {PATCHING_USAGE}"),
    ('logit_diff("The cat sat", answer=" on", foil=" Xyzzyqux", min=1)',
     "target ' Xyzzyqux' is not a single token: it tokenizes to *"),
    ('logit_diff("The cat sat", answer=" on", foil=" in")',
     "no check given: pass min= and/or max="),
])
def test_bad_patching_marker_is_a_collection_error(pytester, marker, message):
    _ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


def test_patching_markers_are_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.logit_diff(prompt, *, answer, foil, min=None, max=None): assert logit*",
        f"{PATCHING_USAGE}: assert where a behaviour lives*",
    ])
