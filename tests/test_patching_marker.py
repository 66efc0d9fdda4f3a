"""The ``logit_diff`` and ``activation_patching`` markers through pytest."""

from __future__ import annotations

import pytest

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

PATCHING_USAGE = (
    "@pytest.mark.activation_patching(clean, corrupted, *, answer, foil=None, site='resid_pre', "
    "layer=None, position=None, head=None, min_recovery=None, max_recovery=None, "
    "peak_layer=None, metric='logit_diff', method='exact', verify_top_k=0, min_effect=None"
    + DATASET_USAGE
)


@pytest.mark.slow
def test_ioi_markers_on_smollm2(pytester):
    ini(pytester, model="smollm2-135m")
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
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'min_recov=0.5)',
     f"unknown keyword 'min_recov' (did you mean 'min_recovery'?); usage: {PATCHING_USAGE}"),
    ('logit_diff("The cat sat", answer=" on", foil=" in")',
     "no check given: pass min= and/or max="),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'site="attn_pattern", min_recovery=0.5)',
     "site 'attn_pattern' cannot be patched: use one of resid_pre, resid_mid, resid_post, "
     "attn_out, mlp_out, head_out"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'method="gradient", min_recovery=0.5)',
     "method must be one of exact, attribution, got 'gradient'"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'verify_top_k=5, min_recovery=0.5)',
     "verify_top_k= checks an attribution estimate against exact patching: pass "
     "method='attribution' too"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", method="attribution", '
     'metric="rank", max_recovery=0.5)',
     "metric rank has no gradient: attribution patching needs a differentiable metric "
     "(logit_diff, logprob, prob, kl)"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'method="attribution", verify_top_k=-1, min_recovery=0.5)',
     "verify_top_k must be an int >= 0, got -1"),
])
def test_bad_patching_marker_is_a_collection_error(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


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
     "head 4 is out of range for tiny-random-llama with 4 heads: use 0..3 (or -4..-1 from the "
     "end)"),
    ('activation_patching("The cat sat", "The dog sat", answer=" on", foil=" in", '
     'position=1, peak_layer=(0, 5))',
     "peak_layer bound 5 is out of range for tiny-random-llama with 3 layers: use 0..2 (or "
     "-3..-1 from the end)"),
    ('logit_diff("The cat sat", answer=" on", foil=" Xyzzyqux", min=1)',
     "target ' Xyzzyqux' is not a single token: it tokenizes to *"),
])
def test_patching_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker,
                                                                       message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


def test_a_bad_marker_fails_only_its_own_test(pytester):
    """A bad-token patchscope, a mismatched-length patching marker and two good tests: the
    good ones pass, each bad one fails with its message, nothing else is interrupted."""
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.patchscope("The cat sat", " dog", layer=0, expect="dog")
        def test_bad_token():
            pass

        @pytest.mark.activation_patching("The cat sat", "The big cat sat", answer=" on",
                                         foil=" in", layer=0, min_recovery=0.5)
        def test_bad_lengths():
            pass

        @pytest.mark.logit_diff("The cat sat", answer=" on", foil=" in", min=-100)
        def test_good_marker():
            pass

        def test_good_plain(interp_model):
            assert interp_model.info.n_layers == 3
    """)
    result = pytester.runpytest("-rf")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "@pytest.mark.patchscope: source token ' dog' is not in 'The cat sat' (tokens: "
        "[[]'The', ' cat', ' sat'[]]): pass one of them or an int position",
    ])
    result.stdout.fnmatch_lines([
        "@pytest.mark.activation_patching: clean and corrupted prompts must tokenize to the "
        "same length, got 3 and 4: reword one so positions line up",
        "  pos  clean            corrupted",
    ])


def test_patching_markers_are_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.logit_diff(prompt, *, answer, foil, min=None, max=None, prompts=None, "
        "stat='mean', confidence=0.95, min_fraction=None, interval='percentile'): assert logit*",
        f"{PATCHING_USAGE}: assert where a behaviour lives*",
    ])


def test_attribution_marker_says_it_is_an_estimate_and_snapshots(pytester, load_backend):
    from pytest_interp.model import InterpModel

    model = InterpModel(load_backend("tiny-random-llama"))
    result = model.activation_patching("The cat sat on the", "The dog sat on the",
                                       answer=" mat", foil=" rug", method="attribution",
                                       verify_top_k=2)
    recovery = result.recovery[0, 1]
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        PAIR = ("The cat sat on the", "The dog sat on the")

        @pytest.mark.activation_patching(*PAIR, answer=" mat", foil=" rug", layer=0,
                                         position=" cat", min_recovery=2,
                                         method="attribution", verify_top_k=2)
        def test_fail():
            pass

        def test_snapshot(interp_model, interp_snapshot):
            result = interp_model.activation_patching(*PAIR, answer=" mat", foil=" rug",
                                                      method="attribution")
            assert result == interp_snapshot
    """)
    outcome = pytester.runpytest("--snapshot-update")
    outcome.assert_outcomes(passed=1, failed=1)
    outcome.stdout.fnmatch_lines([
        f"activation_patching: resid_pre at layer 0, position 1 (' cat') is estimated to "
        f"recover {recovery:.2f} of the clean logit diff, expected min_recovery=2",
        f"resid_pre patching recovery [[]{result.how}] (clean *",
    ])
    assert result.how.startswith("attribution estimate; its 2 largest cells patched exactly: "
                                 "max |error| ")
    stored = (pytester.path / "__snapshots__" / "test_m.interp").read_text()
    assert '"method": "attribution"' in stored
    pytester.runpytest("-k", "snapshot").assert_outcomes(passed=1)
