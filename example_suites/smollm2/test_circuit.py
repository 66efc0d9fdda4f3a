"""The circuit SmolLM2 uses for indirect-object identification: found by edge attribution
(EAP) on 16 IOI prompts against their ABC corruptions (the second name replaced by a third),
run alone with every other edge cut.

On SmolLM2 the top 800 of its 70,651 edges recover 44% of the logit difference on average
(each prompt's share of its clean-vs-corrupted gap), random circuits of 800 edges recover
none of it, and the two heads with the largest edge scores, L23H3 and L20H0, are in it
(docs/kinds/circuit.md has the faithfulness curve).
"""

from __future__ import annotations

import pytest


@pytest.mark.circuit(prompts="ioi:16", top_n=800, min_faithfulness=0.25,
                     nodes=["L23H3", "L20H0"])
def test_a_sparse_circuit_carries_ioi():
    """800 edges (1.1% of them) alone recover at least a quarter of the IOI logit difference
    and run through L23H3 and L20H0 (add control=N to hold them to N random circuits of
    their size: on SmolLM2 those recover nothing)."""
