"""SmolLM2's residual stream after block 15 through a sparse autoencoder: latents that fire on
place names and on code, that the SAE still stands in for the model, and that a latent's
decoder direction steers.

The SAE (``sae/resid_post_15``: top-k, k=32, 4,096 latents, SAELens layout, fp16) was trained
by ``sae/train_sae.py`` on fortunes and pydoc_data; its ``find`` step picked the two latents
by what they fire on and wrote ``sae/resid_post_15/labels.json``.
"""

from __future__ import annotations

import pytest

from pytest_interp.datasets import CAPITALS

SAE = "sae/resid_post_15"
PLACE = 541  # fires on the capital of all 37 countries' "The capital of X is Y", rank 1 on 36
PAREN = 1749  # fires on "(" in Python code
ANSWERED = [f"The capital of {country} is {capital}" for country, capital in CAPITALS]


@pytest.mark.feature(prompts=ANSWERED, sae=SAE, feature=PLACE, min=1.0, stat="fraction",
                     min_fraction=0.8)
@pytest.mark.feature("The capital of France is Paris", sae=SAE, feature=PLACE, top_k=3)
def test_a_latent_fires_on_capital_city_answers():
    """The place latent fires on the capital (activations 2.3-6, median 4.3), the strongest
    there. (It stays silent on "The cat sat on the mat", but so it does on a re-initialised
    model: a claim --interp-controls calls VACUOUS, left to docs/kinds/features.md.)"""


@pytest.mark.feature("print(len(items))", sae=SAE, feature=PAREN, position=1, min=1.5,
                     top_k=8)
@pytest.mark.feature("print(len(items))", sae=SAE, feature=PAREN, position=3, min=1.5)
def test_a_latent_fires_on_code_punctuation():
    """The parenthesis latent fires on both "(" of a Python one-liner (3.1 and 3.6)."""


@pytest.mark.sae_fidelity(prompts="texts.txt", sae=SAE, max_delta_ce=1.25, max_fvu=0.4,
                          l0=(31, 32))
def test_the_sae_stands_in_for_the_residual_stream():
    """With the reconstruction spliced in past the first token, the next-token loss on the
    suite's ten texts rises by 0.63 nats on average (95% CI [0.34, 0.89]); FVU 0.32, L0 32."""


@pytest.mark.steering("My favourite thing is", vector=f"sae:{SAE}#{PLACE}", layer=15,
                      site="resid_post", positions="last", coef=8.0, target=" Munich",
                      min_delta=2.5, control=20)
def test_steering_along_the_place_latent_names_places():
    """Adding 8 x the place latent's decoder direction raises log P(' Munich') by 5.1 nats;
    20 random directions of its norm move it by at most 1.4."""
