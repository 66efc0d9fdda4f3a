"""The ``steering`` marker through pytest."""

from __future__ import annotations

import numpy as np
import pytest

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

STEERING_USAGE = (
    "@pytest.mark.steering(prompt, *, layer, coef, target, positive=None, negative=None, "
    "vector=None, foil=None, site='resid_pre', positions='all', min_delta=None, "
    "max_delta=None, generation_contains=None, max_new_tokens=20, control=0, metric=None"
    + DATASET_USAGE
)


@pytest.mark.slow
def test_steering_markers_on_smollm2(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        REVIEW = "I think this movie is"
        LOVE = dict(positive="I love this", negative="I hate this", layer=16, positions=1)

        @pytest.mark.steering(REVIEW, **LOVE, coef=[1, 2], target=" great", foil=" terrible",
                              min_delta=2)
        @pytest.mark.steering(REVIEW, **LOVE, coef=-2, target=" great", foil=" terrible",
                              max_delta=-2)
        @pytest.mark.steering(REVIEW, **LOVE, coef=4, target=" great",
                              generation_contains="worth", max_new_tokens=8)
        def test_love_steers_the_review():
            pass

        @pytest.mark.steering(REVIEW, **LOVE, coef=[0, 1], target=" great", foil=" terrible",
                              min_delta=1)
        def test_fails():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*_ test_fails _*",
        "steering: coef 0 moves the ' great' - ' terrible' logit diff by +0.000, expected "
        "min_delta=1",
        "steering at resid_pre@16 (vector norm 46.7, positions 1) on 'I think this movie is': "
        "' great' - ' terrible' logit diff at the last position",
        "      coef     value     delta       KL  top-5 next tokens",
        "  baseline     4.222                     ' a' 0.24, ' going' 0.11, ' about' 0.11, "
        "' just' 0.06, ' an' 0.02",
        ">        0     4.222    +0.000    0.000  ' a' 0.24, ' going' 0.11, ' about' 0.11, "
        "' just' 0.06, ' an' 0.02",
        "         1     7.200    +2.978    0.250  ' a' 0.34, ' about' 0.08, ' just' 0.07, "
        "' going' 0.04, ' an' 0.03",
    ])
    assert "Traceback" not in result.stdout.str()


def test_vector_file_relative_to_rootdir(pytester, load_backend):
    ini(pytester, model="tiny-random-llama", backend="nnsight")
    model = load_backend("tiny-random-llama")
    vector = np.random.default_rng(0).normal(size=model.info.d_model).astype(np.float32)
    (pytester.path / "vectors").mkdir()
    np.save(pytester.path / "vectors" / "v.npy", 50 * vector)
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.steering("The cat sat", vector="vectors/v.npy", layer=1, coef=[1, -1],
                              target=" on", max_delta=1e9)
        def test_x():
            pass
    """)
    pytester.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(("marker", "message"), [
    ('steering("The cat sat", vector="missing.npy", layer=1, coef=2, target=" on", '
     'min_delta=1)',
     "steering vector file '*/missing.npy' does not exist: check the path"),
    ('steering("The cat sat", layer=1, coef=2, target=" on", min_delta=1)',
     "no vector: pass positive= and negative= prompts, or vector=FILE"),
    ('steering("The cat sat", positive="a cat", negative="a dog", layer=1, coef=2, '
     'target=" on")',
     "no check given: pass min_delta=, max_delta= or generation_contains="),
    ('steering("The cat sat", positive="a cat", negative="a dog", layer=1, coeff=2, '
     'target=" on", min_delta=1)',
     f"unknown keyword 'coeff' (did you mean 'coef'?); usage: {STEERING_USAGE}"),
])
def test_bad_steering_marker_is_a_collection_error(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


@pytest.mark.parametrize(("marker", "message"), [
    ('steering("The cat sat", positive="a cat", negative="a cat", layer=1, coef=2, '
     'target=" on", min_delta=1)',
     "the resid_pre@1 difference of the prompts is zero (norm 0): use prompts whose "
     "activations differ there"),
    ('steering("The cat sat", positive="a cat", negative="a dog", layer=3, coef=2, '
     'target=" on", min_delta=1)',
     "layer 3 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 from "
     "the end)"),
    ('steering("The cat sat", positive="a cat", negative="a dog", layer=1, coef=2, '
     'target=" Xyzzyqux", min_delta=1)',
     "target ' Xyzzyqux' is not a single token: it tokenizes to *"),
])
def test_steering_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker,
                                                                       message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


def test_steering_marker_is_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([f"{STEERING_USAGE}: assert what a steering vector does*"])
