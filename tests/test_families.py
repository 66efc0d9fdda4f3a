"""Every probe on every family we claim, through both backends, with the same numbers.

The contract test (tests/test_contract.py) holds each adapter to raw HF hooks site by site;
this runs the probes themselves on each family's seeded tiny random model.
"""

from __future__ import annotations

import numpy as np
import pytest

from pytest_interp.errors import SiteError
from pytest_interp.lenses import TunedLens
from pytest_interp.model import InterpModel

from .conftest import TINY_SPECS

TOL = 1e-4
CLEAN, CORRUPTED = "When Mary and John went to the store, John gave", \
    "When Mary and John went to the store, Mary gave"


def _probes(model: InterpModel) -> dict[str, np.ndarray]:
    """Each probe's numbers (and texts as token-id arrays) on one model."""
    info = model.info
    lens = model.logit_lens(CLEAN, positions=None)
    identity = TunedLens.identity(info.d_model, info.n_layers)
    tuned = model.tuned_lens(CLEAN, lens=identity, positions=None)
    patching = model.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John")
    heads = model.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                      site="head_out", per_position=False)
    mlp = model.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                    site="mlp_out", layers=[0, -1])
    scope = model.patchscope(CLEAN, " store", layer=list(range(info.n_layers)),
                             expected=" store", max_new_tokens=3)
    vector = model.steering_vector("I love this", "I hate this", layer=1)
    steer = model.steer("I think this movie is", vector, layer=1, coef=[0, 4], target=" great",
                        foil=" bad", max_new_tokens=3)
    attention = model.attention(CLEAN)
    return {
        "lens": lens.logits, "tuned": tuned.logits, "patching": patching.patched,
        "head patching": heads.patched, "mlp patching": mlp.patched,
        "patchscope": np.array(scope.token_ids), "patchscope p": np.array(scope.expected_prob),
        "steering": np.array([*steer.values, *steer.kl]),
        "attention": np.stack([attention.scores[k] for k in sorted(attention.scores)]),
        "logit diff": np.array([model.logit_diff(CLEAN, " Mary", " John")]),
    }


@pytest.mark.parametrize("spec", TINY_SPECS)
@pytest.mark.slow
def test_every_probe_runs_on_every_family_with_the_same_numbers(spec, load_backend):
    tl = InterpModel(load_backend(spec, "transformer_lens"))
    nn = InterpModel(load_backend(spec, "nnsight"))
    a, b = _probes(tl), _probes(nn)
    np.testing.assert_allclose(a["lens"], a["tuned"], atol=TOL)  # the identity tuned lens
    for name in a:
        assert a[name].shape == b[name].shape, name
        if a[name].dtype.kind in "iu":  # generated token ids: exact
            assert (a[name] == b[name]).all(), name
        else:
            np.testing.assert_allclose(a[name], b[name], atol=TOL, equal_nan=True,
                                       err_msg=name)
    assert np.isfinite(a["patching"]).all() and np.isnan(a["mlp patching"]).any()


def test_parallel_blocks_refuse_resid_mid_in_one_line(load_backend):
    model = InterpModel(load_backend("tiny-random-gpt-neox"))
    with pytest.raises(SiteError) as err:
        model.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                  site="resid_mid")
    assert str(err.value) == (
        "tiny-random-gpt-neox (GPT-NeoX / Pythia) has parallel blocks: attention and the MLP "
        "both read resid_pre, so there is no resid_mid to read or edit; use resid_pre, "
        "attn_out or mlp_out"
    )
    assert "resid_mid" not in {site.component for site in model.cache(CLEAN)}
