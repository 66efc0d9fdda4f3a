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


@pytest.mark.lens(FACT, target=" Paris", layer=-1, top_k=1)
@pytest.mark.lens(FACT, target=" Paris", emerges_by=28, top_k=3)
@pytest.mark.lens("The capital of Italy is", target=" Rome", layer=-1, top_k=1)
@pytest.mark.lens("The capital of Germany is", target=" Berlin", layer=-1, top_k=1)
@pytest.mark.lens("The Eiffel Tower is in the city of", target=" Paris", layer=-1, top_k=1)
def test_facts_are_recalled_late():
    """Markers alone are a complete test: the recall trajectory through the logit lens."""


def test_paris_is_absent_from_the_early_residual_stream(interp_model):
    lens = interp_model.logit_lens(FACT)
    assert lens.rank(" Paris", layer=-1) == 0
    assert min(lens.ranks(" Paris")[:20]) > 100  # nowhere near the top before layer 20
    assert lens.kl_to_final[:20].min() > 5  # nats: early layers decode to something else


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
