"""What Gemma-3-270M does inside, found by exploring it (numbers measured on CPU, float32).

Facts resolve late: " Paris" is the top token of the Eiffel Tower prompt from layer 13 on
(rank 1 at layer 12, 0.50 at the last layer). IOI: the indirect object " Mary" beats the
subject " John" by +5.22 (corrupted: -3.61); the name's information sits at the second
" John" until about layer 11 and at the last position from layer 14 (recovery 0.92, 1.01 at
the last layers). L5H1 is an induction head (0.96), as are L5H2 and L5H3.
"""

from __future__ import annotations

import pytest

EIFFEL = "The Eiffel Tower is in the city of"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


@pytest.mark.lens(EIFFEL, " Paris", layer=-1, top_k=1)
@pytest.mark.lens(EIFFEL, " Paris", emerges_by=13, top_k=1)
@pytest.mark.lens("The capital of Japan is", " Tokyo", layer=-1, top_k=1)
def test_facts_resolve_in_the_late_layers():
    pass


@pytest.mark.logit_diff(CLEAN, answer=" Mary", foil=" John", min=3)
@pytest.mark.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                 position=-5, layer=0, min_recovery=0.9)
@pytest.mark.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John",
                                 position=" to", peak_layer=(14, 17))
def test_ioi_moves_the_name_to_the_last_position_late():
    pass


@pytest.mark.attention(kind="induction", head=(5, 1), min_score=0.8)
def test_layer_5_has_an_induction_head():
    pass


def test_the_architecture_is_gemma3(interp_model):
    info = interp_model.info
    assert (info.architecture, info.n_layers, info.d_model) == ("Gemma3ForCausalLM", 18, 640)
    assert interp_model.logit_lens(EIFFEL).rank(" Paris", layer=12) <= 2
