"""The ``lens`` marker through pytest: every argument, collection errors, failure text."""

from __future__ import annotations

import pytest

from pytest_interp.lenses import TunedLens

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

LENS_USAGE = ("@pytest.mark.lens(prompt, target, *, layer=None, position=-1, top_k=None, "
              "min_prob=None, emerges_by=None, lens='logit'" + DATASET_USAGE)


@pytest.mark.slow
def test_markers_alone_are_a_complete_test_on_smollm2(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        FACT = "The capital of France is"

        @pytest.mark.lens(FACT, target=" Paris", layer=-1, top_k=1)
        @pytest.mark.lens(FACT, target=" Paris", layer=-1, min_prob=0.5)
        @pytest.mark.lens(FACT, target=" Paris", emerges_by=28, top_k=3)
        @pytest.mark.lens(FACT, target=" France", position=3, layer=0, top_k=49152)
        def test_paris_is_recalled_late():
            pass

        @pytest.mark.lens(FACT, target=" Paris", emerges_by=20)
        @pytest.mark.lens(FACT, target=" Paris", layer=27, top_k=1)
        def test_too_early():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_too_early _*",  # the markers' failures in source order
        "lens: ' Paris' stays in the top-1 only from layer 29, expected by layer 20 "
        "(emerges_by=20)",
        "logit lens on 'The capital of France is' at position -1 (' is'), target ' Paris'",
        "*",
        ">    20  ' ' 0.92  '.' 0.05  ',' 0.01                   3240   0.0000",
        "*",
        "lens: ' Paris' has rank 6 at layer 27, expected top_k=1 (rank < 1)",
        "logit lens on 'The capital of France is' at position -1 (' is'), target ' Paris'",
        "  layer  top-3 * rank     prob",
        ">    27  ' the' 0.67  ' ' 0.07  ' D' 0.04                  6   0.0106",
    ])
    result.stdout.fnmatch_lines(["interp: smollm2-135m * 1 forward pass, * reused, *"])
    assert "Traceback" not in result.stdout.str()


def test_tuned_lens_folder_is_relative_to_the_rootdir(pytester):
    ini(pytester, model="tiny-random-llama")
    lens = TunedLens.identity(64, 3)
    lens.save(pytester.path / "lenses" / "tiny")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.lens("Hello there, world", target=" world", layer=1, position=2,
                          top_k=49152, lens="lenses/tiny")
        def test_passes():
            pass

        @pytest.mark.lens("Hello there, world", target=" world", layer=1, min_prob=1.0,
                          lens="lenses/tiny")
        def test_fails():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "lens: ' world' has prob 0.0* at layer 1, expected min_prob=1.0",
        f"{pytester.path / 'lenses' / 'tiny'} lens on 'Hello there, world' at position -1 "
        "(' world'), target ' world'",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ('lens("The capital of France is", " Paris", layer=-1, topk=1)',
     f"unknown keyword 'topk' (did you mean 'top_k'?); usage: {LENS_USAGE}"),
    ('lens("The capital of France is", " Paris")',
     "no check given: pass top_k=, min_prob= or emerges_by="),
    ('lens("The capital of France is", " Paris", layer=0, top_k=1, lens="nowhere")',
     "tuned lens '*/nowhere' needs config.json and params.pt in one folder: train one with "
     "`pytest-interp lens train --model SPEC --text FILE --out DIR`"),
    ('lens("", " Paris", layer=0, top_k=1)', "prompt must be a non-empty string, got ''"),
])
def test_bad_lens_marker_is_a_collection_error_naming_the_test(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


@pytest.mark.parametrize(("marker", "message"), [
    ('lens("The capital of France is", " Paris", layer=3, top_k=1)',
     "layer 3 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 from "
     "the end)"),
    ('lens("The capital of France is", " Paris", emerges_by=-4)',
     "emerges_by -4 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 "
     "from the end)"),
    ('lens("The capital of France is", " Paris", layer=0, top_k=1, position=5)',
     "position 5 is outside the 5-token prompt 'The capital of France is': use 0..4 or -5..-1"),
    ('lens("The capital of France is", " Xyzzyqux", layer=0, top_k=1)',
     "target ' Xyzzyqux' is not a single token: it tokenizes to [[]' X', 'y', 'zzy', 'qu', 'x'[]]; "
     "use a single-token target "
     "(mind the leading space, e.g. ' Paris')"),
])
def test_lens_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


def test_lens_marker_without_a_model_fails_its_test(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.lens("The capital of France is", " Paris", layer=-1, top_k=1)
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "pytest-interp: no model given: pass --interp-model SPEC, set interp_model in the "
        "ini file, or mark the test with @pytest.mark.interp_model('SPEC')",
    ])


def test_lens_marker_is_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([f"{LENS_USAGE}: assert where target shows up in the residual *"])
