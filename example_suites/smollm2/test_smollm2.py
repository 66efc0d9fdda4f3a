"""What SmolLM2-135M-Instruct does inside, written as tests on raw activations."""

from __future__ import annotations

import pytest
import torch

FACT = "The capital of France is"
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"


def next_token(interp_model, prompt: str) -> str:
    logits = interp_model.run(prompt).logits[0, -1]
    return interp_model.backend.decode([int(logits.argmax())])


def test_paris_is_the_next_token(interp_model):
    assert next_token(interp_model, FACT) == " Paris"


def test_paris_emerges_late_in_the_residual_stream(interp_cache, interp_model):
    """A hand-written logit lens: Paris is top-1 only in the last layers."""
    cache = interp_cache(FACT)
    n_layers = interp_model.info.n_layers
    top = [interp_model.backend.decode([int(
        interp_model.backend.unembed(cache["resid_post", layer][0, -1]).argmax())])
        for layer in range(n_layers)]
    first = next(i for i in range(n_layers) if all(t == " Paris" for t in top[i:]))
    assert n_layers // 2 < first <= n_layers - 1, top


def test_ioi_prefers_the_indirect_object(interp_model):
    logits = interp_model.run(IOI_CLEAN).logits[0, -1]
    mary, john = (interp_model.tokens(t).ids[0][0] for t in (" Mary", " John"))
    assert logits[mary] - logits[john] > 3


def test_attention_patterns_are_causal_distributions(interp_cache, interp_model):
    cache = interp_cache(IOI_CLEAN)
    for layer in range(interp_model.info.n_layers):
        pattern = cache["attn_pattern", layer][0]  # [heads, query, key]
        assert torch.allclose(pattern.sum(-1), torch.ones(pattern.shape[:2]), atol=1e-4)
        assert pattern.triu(diagonal=1).abs().max() == 0


@pytest.mark.interp_model("smollm2-135m", backend="nnsight")
def test_nnsight_backend_agrees(interp_model):
    assert next_token(interp_model, FACT) == " Paris"


def test_greedy_answer_mentions_paris(interp_model):
    assert "Paris" in interp_model.generate(FACT, max_new_tokens=4)
