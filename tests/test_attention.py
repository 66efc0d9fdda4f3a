"""Attention-head summaries: scores by hand, labels, the marker and its exact failure text."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp.backends.base import Site
from pytest_interp.errors import InterpError
from pytest_interp.kinds.attention import AttentionExpectation
from pytest_interp.model import InterpModel
from pytest_interp.probes.attention import repeated_random_tokens
from pytest_interp.results import AttentionResult, attention_labels

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

IOI = "When Mary and John went to the store, John gave a drink to"


def _result() -> AttentionResult:
    scores = {
        "previous_token": np.array([[0.9, 0.1]]), "induction": np.array([[0.0, 0.7]]),
        "first_token": np.array([[0.05, 0.2]]), "self": np.array([[0.05, 0.0]]),
        "entropy": np.array([[0.3, 1.2]]),
    }
    return AttentionResult(model="m", prompt=None, str_tokens=("a", "b"), scores=scores,
                           labels=attention_labels(scores), patterns=np.zeros((1, 2, 2, 2)))


def test_labels_and_thresholds():
    result = _result()
    assert result.labels == (("previous_token", "induction"),)
    assert result.heads("induction") == [(0, 1)]
    assert attention_labels(result.scores, {"induction": 0.8}) == (("previous_token", "mixed"),)
    with pytest.raises(InterpError) as err:
        attention_labels(result.scores, {"copying": 0.5})
    assert str(err.value) == ("no label threshold 'copying': use induction, previous_token, "
                              "self, first_token")


def test_what_an_expectation_measured_for_junit_and_summaries():
    """A head's score; "some head": the highest score, and whose."""
    result = _result()
    assert AttentionExpectation(kind="induction", head=(0, 0), min_score=0.5).measured(
        result) == "induction score 0"
    assert AttentionExpectation(kind="induction", min_score=0.5).measured(
        result) == "highest induction score 0.7 (L0H1)"


def test_expectation_failure_text():
    result = _result()
    assert AttentionExpectation(kind="induction", head=(0, 1), min_score=0.5).judge(result) is None
    assert AttentionExpectation(kind="induction", min_score=0.5).judge(result) is None
    assert AttentionExpectation(kind="induction", head=(0, 0), min_score=0.5).judge(
        result).splitlines() == [
        "attention: L0H0 has induction score 0.000 (label previous_token), expected "
        "min_score=0.5",
        "attention heads of m on the repeated random sequence (induction on 20 seeded random "
        "tokens x 2, seed 0)",
        "     head  previous_token       induction     first_token            self         "
        "entropy  label",
        ">    L0H0           0.900           0.000           0.050           0.050           "
        "0.300  previous_token",
        "     L0H1           0.100           0.700           0.200           0.000           "
        "1.200  induction",
    ]
    assert AttentionExpectation(kind="self", min_score=0.5).judge(result).splitlines()[0] == (
        "attention: no head's self score meets min_score=0.5; the highest is L0H0 at 0.050")


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(kind="copying", min_score=0.5), "kind must be one of previous_token, induction, "
                                          "first_token, self, entropy, got 'copying'"),
    (dict(kind="self"), "no check given: pass min_score= and/or max_score="),
    (dict(kind="self", head=3, min_score=0.5), "head must be a (layer, head) pair of ints, "
                                               "got 3"),
])
def test_expectation_rejects_bad_arguments(kwargs, message):
    with pytest.raises(InterpError) as err:
        AttentionExpectation(**kwargs)
    assert str(err.value) == message


def test_scores_match_the_patterns_by_hand(load_backend):
    model = InterpModel(load_backend("tiny-random-gpt2"))
    result = model.attention(IOI)
    layer = 1
    pattern = model.cache(IOI)[Site(layer, "attn_pattern")][0]  # [H, Q, K]
    q = pattern.shape[1]
    for head in range(model.info.n_heads):
        p = pattern[head]
        prev = np.mean([float(p[i, i - 1]) for i in range(1, q)])
        first = np.mean([float(p[i, 0]) for i in range(1, q)])
        ent = np.mean([float(-(p[i] * torch.log(p[i].clamp_min(1e-30))).sum())
                       for i in range(1, q)])
        assert result.score("previous_token", layer, head) == pytest.approx(prev, abs=1e-6)
        assert result.score("first_token", layer, head) == pytest.approx(first, abs=1e-6)
        assert result.score("entropy", layer, head) == pytest.approx(ent, abs=1e-5)
    repeated = repeated_random_tokens(model, 20, 0)
    assert repeated.ids[0][:20] == repeated.ids[0][20:]
    assert repeated == repeated_random_tokens(model, 20, 0)
    rep = model.run(repeated, read=[Site(layer, "attn_pattern")]).acts[Site(layer,
                                                                            "attn_pattern")][0]
    induction = np.mean([float(rep[0, i, i - 19]) for i in range(20, 40)])
    assert model.attention().score("induction", layer, 0) == pytest.approx(induction, abs=1e-6)


@pytest.mark.slow
def test_smollm2_heads(smollm2, smollm2_nnsight):
    ours = smollm2.attention()
    assert ours.label(18, 6) == "induction" and ours.score("induction", 18, 6) > 0.7
    assert ours.label(16, 0) == "previous_token" and ours.score("previous_token", 16, 0) > 0.8
    assert len(ours.heads("induction")) >= 4 and (18, 6) in ours.heads("induction")
    other = smollm2_nnsight.attention()
    for kind in ours.scores:
        np.testing.assert_allclose(ours.scores[kind], other.scores[kind], atol=1e-5)
    assert ours.labels == other.labels


@pytest.mark.slow
def test_attention_markers(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.attention(kind="induction", head=(18, 6), min_score=0.7)
        @pytest.mark.attention(kind="induction", min_score=0.8)
        @pytest.mark.attention(kind="previous_token", head=(16, 0), min_score=0.8)
        @pytest.mark.attention("When Mary and John went to the store", kind="first_token",
                               head=(18, 8), min_score=0.5)
        def test_heads():
            pass

        @pytest.mark.attention(kind="induction", head=(0, 0), min_score=0.5)
        def test_fails():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "attention: L0H0 has induction score 0.0* (label *), expected min_score=0.5",
        "attention heads of smollm2-135m on the repeated random sequence (induction on 20 "
        "seeded random tokens x 2, seed 0)",
        ">    L0H0 *",
        "    L18H6           0.028           0.801           0.278           0.018           "
        "0.607  induction",
    ])


@pytest.mark.parametrize(("marker", "message"), [
    ('attention(kind="induction", head=(3, 0), min_score=0.5)',
     "layer 3 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 from "
     "the end)"),
    ('attention(kind="induction", head=(0, 9), min_score=0.5)',
     "head 9 is out of range for tiny-random-llama with 4 heads: use 0..3 (or -4..-1 from the "
     "end)"),
    ('attention("Hi", kind="self", min_score=0.5)',
     "the prompt 'Hi' has one token: attention scores need two or more"),
])
def test_attention_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker,
                                                                        message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


@pytest.mark.parametrize(("marker", "message"), [
    ('attention(kind="copying", min_score=0.5)',
     "kind must be one of previous_token, induction, first_token, self, entropy, got 'copying'"),
    ('attention(head=(0, 1), min_score=0.5)',
     "missing a required argument: 'kind'; usage: @pytest.mark.attention(prompt=None, *, kind, "
     "head=None, min_score=None, max_score=None" + DATASET_USAGE[:-1] + ")"),
])
def test_bad_attention_marker_is_a_collection_error(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)
