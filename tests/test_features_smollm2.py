"""The example suite's dictionary tests on SmolLM2 are loud about damage and quiet about noise:
a bfloat16 round trip and 1e-3 relative weight noise keep every one green; zeroing the MLPs
of the blocks before the SAE's site (0-14) makes the fidelity test fail, in model terms.
The benign runs take the suite's tests as they are; the damaged run, its fidelity test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .test_variants import VARIANTS

pytest_plugins = ["pytester"]

SUITE = Path(__file__).resolve().parents[1] / "example_suites" / "smollm2"

ZEROED = '''

def zeroed_mlps(spec, request):
    """The MLPs of blocks 0-14 (before the SAE's site, resid_post 15) zeroed."""
    loaded = load_hf(resolve_spec("smollm2-135m"))
    with torch.no_grad():
        for layer in loaded.model.model.layers[:15]:
            layer.mlp.down_proj.weight.zero_()
    return loaded.model, loaded.tokenizer


_variants = pytest_interp_load_model


def pytest_interp_load_model(spec, request):
    if spec == "variant:MLPs 0-14 zeroed":
        return zeroed_mlps(spec, request)
    return _variants(spec, request)
'''


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    for name in ("test_features.py", "texts.txt", "pytest.ini"):
        shutil.copy(SUITE / name, pytester.path / name)
    shutil.copytree(SUITE / "sae", pytester.path / "sae", ignore=shutil.ignore_patterns("*.py"))
    pytester.makeconftest(VARIANTS + ZEROED)
    return pytester


@pytest.mark.slow
def test_benign_variants_keep_every_feature_test_green(suite):
    """Both variants in one session (a series: one model at a time)."""
    result = suite.runpytest("--interp-model=variant:bfloat16 round trip",
                             "--interp-model=variant:1e-3 relative noise", "-p",
                             "no:cacheprovider")
    assert result.ret == 0, result.stdout.str()[-5000:]
    result.assert_outcomes(passed=8)


@pytest.mark.slow
def test_zeroing_the_mlps_before_the_saes_site_fails_the_fidelity_test(suite):
    result = suite.runpytest("--interp-model=variant:MLPs 0-14 zeroed", "-p",
                             "no:cacheprovider", "-k", "fidelity")
    result.assert_outcomes(failed=1)
    # the damaged model's own loss is 14.3 nats, so the splice cannot make it much worse; the
    # reconstruction misses almost all of its residual stream (FVU ~3.8)
    result.stdout.fnmatch_lines(["sae_fidelity over texts.txt (10 prompts): sae/resid_post_15 "
                                 "at resid_post@15 over 10 texts: the FVU is *, above "
                                 "max_fvu=0.4"])
