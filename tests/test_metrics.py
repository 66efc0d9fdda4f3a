"""Patching metrics: each name equals its definition on the runs, a callable is batched,
recovery keeps its meaning, and bad metrics are one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp import dataset, metrics
from pytest_interp.errors import InterpError
from pytest_interp.model import InterpModel

from .conftest import BACKENDS
from .pytester_helpers import assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.fixture(params=BACKENDS)
def tiny(request, load_backend):
    return InterpModel(load_backend("tiny-random-llama", request.param))


def _last(model: InterpModel, prompt: str) -> torch.Tensor:
    return model.run(prompt).logits[0, -1].float()


@pytest.mark.parametrize("name", metrics.METRICS)
def test_named_metrics_measure_clean_and_corrupted_runs(tiny, name):
    result = tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                      metric=name, layers=[1])
    clean, corrupted = _last(tiny, CLEAN), _last(tiny, CORRUPTED)
    a, f = tiny.vocab.id(" Mary"), tiny.vocab.id(" John")

    def expected(logits: torch.Tensor) -> float:
        logp = torch.log_softmax(logits, -1)
        return {"logit_diff": logits[a] - logits[f], "logprob": logp[a],
                "prob": logp[a].exp(), "rank": (logits > logits[a]).sum().float(),
                "kl": (torch.log_softmax(clean, -1).exp()
                       * (torch.log_softmax(clean, -1) - logp)).sum()}[name].item()

    assert result.clean_logit_diff == pytest.approx(expected(clean), abs=1e-4)
    assert result.corrupted_logit_diff == pytest.approx(expected(corrupted), abs=1e-4)
    assert result.metric == metrics.label(name)
    # patching the whole residual stream at the first layer restores the clean run
    full = tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                    metric=name, layers=[0], positions=[-5])
    if name != "rank" or result.clean_logit_diff != result.corrupted_logit_diff:
        assert full.recovery[0, -5] == pytest.approx(1.0, abs=1e-3)


def test_a_callable_metric_is_batched_and_equals_the_named_one(tiny):
    a, f = tiny.vocab.id(" Mary"), tiny.vocab.id(" John")
    shapes = []

    def mary_minus_john(logits: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(logits.shape))
        return logits[:, a] - logits[:, f]

    custom = tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", metric=mary_minus_john)
    named = tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John")
    np.testing.assert_allclose(custom.patched, named.patched, atol=1e-5, equal_nan=True)
    assert custom.metric == "mary_minus_john" and any(s[0] > 1 for s in shapes)

    def scalar(logits: torch.Tensor) -> torch.Tensor:
        return logits.sum()

    with pytest.raises(InterpError, match=r"^metric scalar must return one number per row, a "
                                          r"tensor of shape \(1,\), got \(\)$"):
        tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", metric=scalar)


def test_metric_over_a_dataset_equals_single_runs(tiny):
    result = dataset(tiny, "activation_patching", "ioi:6", layer=1, position="S2",
                          metric="logprob", min_recovery=-1e9)
    for row, res in zip(result.rows, result.results, strict=True):
        single = tiny.activation_patching(row["clean"], row["corrupted"], answer=row["answer"],
                                          metric="logprob")
        assert res.clean_logit_diff == pytest.approx(single.clean_logit_diff, abs=1e-4)
        assert res.metric == "logprob"


def test_bad_metrics_are_one_line(tiny):
    with pytest.raises(InterpError, match=r"^metric must be one of logit_diff, logprob, prob, "
                                          r"rank, kl or a callable \[rows, vocab\] -> \[rows\], "
                                          r"got 'loss'$"):
        tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary", metric="loss")
    with pytest.raises(InterpError, match=r"^metric='logit_diff' needs foil=: pass a foil "
                                          r"token, or another metric \(logprob, prob, rank, "
                                          r"kl\)$"):
        tiny.activation_patching(CLEAN, CORRUPTED, answer=" Mary")


def test_metric_marker_snapshot_and_failure_text(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        CLEAN, CORRUPTED = {CLEAN!r}, {CORRUPTED!r}

        # min_effect=0: a random model's clean and corrupted runs barely differ
        @pytest.mark.activation_patching(CLEAN, CORRUPTED, answer=" Mary", metric="kl",
                                         layer=0, position=-5, min_recovery=0.99, min_effect=0)
        def test_kl_restored():
            pass

        @pytest.mark.activation_patching(CLEAN, CORRUPTED, answer=" Mary", metric="prob",
                                         layer=0, position=0, min_recovery=0.5, min_effect=0)
        def test_prob_fails():
            pass

        def test_snapshot(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.activation_patching(
                CLEAN, CORRUPTED, answer=" Mary", metric="logprob", layers=[0])
    """)
    result = pytester.runpytest("--snapshot-update", "--interp-noise-floor=none")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "activation_patching: resid_pre at layer 0, position 0 ('When') recovers -0.00 of the "
        "clean prob, expected min_recovery=0.5",
        "resid_pre patching recovery (clean +*, corrupted +*: prob of ' Mary' at the last "
        "position); rows layer, columns position",
    ])
    stored = next((pytester.path / "__snapshots__").glob("*.interp")).read_text()
    assert '"metric": "logprob"' in stored
    assert pytester.runpytest("-k", "snapshot").ret == 0


def test_bad_metric_markers(pytester):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(
        pytester, f'activation_patching({CLEAN!r}, {CORRUPTED!r}, answer=" Mary", layer=0, '
                  'position=0, min_recovery=0.5)',
        "metric='logit_diff' needs foil=: pass a foil token, or another metric (logprob, "
        "prob, rank, kl)")
    assert_fails_when_run(
        pytester, f'activation_patching({CLEAN!r}, {CORRUPTED!r}, answer=" Mary", '
                  'foil=" Parisian-ish", layer=0, position=0, min_recovery=0.5)',
        "target ' Parisian-ish' is not a single token*")


@pytest.mark.parametrize("name", metrics.METRICS)
def test_steering_takes_a_metric(tiny, name):
    vector = tiny.steering_vector("I love this", "I hate this", layer=1)
    result = tiny.steer("The cat sat on the", vector, layer=1, coef=[0, 2.0], target=" mat",
                        foil=" rug", metric=name)
    default = tiny.steer("The cat sat on the", vector, layer=1, coef=[0, 2.0], target=" mat",
                         foil=" rug")
    assert result.metric == metrics.label(name) and result.delta[0] == 0
    if name == "logit_diff":
        np.testing.assert_allclose(result.values, default.values, atol=1e-5)
    if name == "kl":  # KL from the unsteered run: the steering KL column itself
        np.testing.assert_allclose(result.values, default.kl, atol=1e-5)
    if name == "prob":
        logprob = tiny.steer("The cat sat on the", vector, layer=1, coef=[0, 2.0],
                             target=" mat", metric="logprob")
        np.testing.assert_allclose(result.values, np.exp(logprob.values), rtol=1e-4)


def test_steering_metric_marker(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.steering("The cat sat on the", layer=1, coef=2.0, target=" mat",
                              positive="I love this", negative="I hate this", metric="rank",
                              max_delta=-1000)
        def test_rank():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["steering: coef 2 moves the rank of ' mat' by *, expected "
                                 "max_delta=-1000",
                                 "steering at resid_pre@1 *: rank of ' mat' at the last "
                                 "position"])
