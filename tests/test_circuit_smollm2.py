"""The example suite's circuit test on SmolLM2 is quiet about noise and loud about damage: a
bfloat16 round trip keeps it green; zeroing the head with the largest edge scores (L23H3)
fails it: the circuit found on the damaged model recovers none of the logit difference."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .test_variants import VARIANTS

pytest_plugins = ["pytester"]

SUITE = Path(__file__).resolve().parents[1] / "example_suites" / "smollm2"

ZEROED = '''

HEADS = ((23, 3),)


def zeroed_heads(spec, request):
    """Heads zeroed: their queries and their output projections."""
    loaded = load_hf(resolve_spec("smollm2-135m"))
    layers = loaded.model.model.layers
    head_dim = loaded.model.config.hidden_size // loaded.model.config.num_attention_heads
    with torch.no_grad():
        for layer, head in HEADS:
            attn = layers[layer].self_attn
            attn.q_proj.weight[head * head_dim:(head + 1) * head_dim] = 0
            attn.o_proj.weight[:, head * head_dim:(head + 1) * head_dim] = 0
    return loaded.model, loaded.tokenizer


_variants = pytest_interp_load_model


def pytest_interp_load_model(spec, request):
    if spec == "variant:L23H3 zeroed":
        return zeroed_heads(spec, request)
    return _variants(spec, request)
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in ("test_circuit.py", "pytest.ini"):
        shutil.copy(SUITE / name, pytester.path / name)
    pytester.makeconftest(VARIANTS + ZEROED)
    return pytester


@pytest.mark.slow
def test_a_bfloat16_round_trip_keeps_the_circuit_test_green(suite):
    result = suite.runpytest("--interp-model=variant:bfloat16 round trip", "-p",
                             "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()[-5000:]
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_zeroing_the_head_with_the_largest_edge_scores_fails_it(suite):
    result = suite.runpytest("--interp-model=variant:L23H3 zeroed", "-p",
                             "no:cacheprovider")
    result.assert_outcomes(failed=1)
    # The circuit found on the damaged model recovers nothing of what is left of the gap.
    result.stdout.fnmatch_lines(["circuit over ioi:16: mean faithfulness is *, 95% CI * "
                                 "(percentile bootstrap, 9999 resamples, n=*), expected "
                                 "min_faithfulness=0.25*: the whole interval is on the wrong "
                                 "side"])
