"""What SmolLM2-135M-Instruct does inside, written as tests on raw activations."""

from __future__ import annotations

import pytest
import torch

from pytest_interp.datasets import capitals

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


@pytest.mark.next_token(prompts="capitals", stat="fraction", min_fraction=0.6)
@pytest.mark.logit_diff(prompts="capitals", min=5)
@pytest.mark.lens(prompts="capitals", layer=-1, top_k=5, stat="fraction", min_fraction=0.8)
def test_capitals_are_recalled_over_a_dataset():
    """Fact recall over 37 countries: most capitals are the top next token, and the capital
    beats another country's capital by a wide logit margin on average."""


def test_paris_is_absent_from_the_early_residual_stream(interp_model):
    lens = interp_model.logit_lens(FACT)
    assert lens.rank(" Paris", layer=-1) == 0
    assert min(lens.ranks(" Paris")[:20]) > 100  # nowhere near the top before layer 20
    assert lens.kl_to_final[:20].min() > 5  # nats: early layers decode to something else


IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
IOI = dict(answer=" Mary", foil=" John")


@pytest.mark.logit_diff(IOI_CLEAN, **IOI, min=3)
@pytest.mark.logit_diff(IOI_CORRUPTED, **IOI, max=-3)
@pytest.mark.activation_patching(IOI_CLEAN, IOI_CORRUPTED, **IOI, site="resid_pre", layer=0,
                                 position=-5, min_recovery=0.8)
@pytest.mark.activation_patching(IOI_CLEAN, IOI_CORRUPTED, **IOI, position=-1,
                                 peak_layer=(24, 29))
@pytest.mark.activation_patching(IOI_CLEAN, IOI_CORRUPTED, **IOI, position=" John",
                                 peak_layer=(0, 19))
def test_ioi_name_moves_from_the_name_to_the_end():
    """IOI: the indirect object's identity sits at the repeated name early, at the end late."""


@pytest.mark.logit_diff(prompts="ioi:64", min=3)
@pytest.mark.activation_patching(prompts="ioi:64", layer=-1, position="END", min_recovery=0.8)
@pytest.mark.activation_patching(prompts="ioi:64", layer=20, position="S2", min_recovery=0.5)
@pytest.mark.activation_patching(prompts="ioi:64", layer=14, position="END", max_recovery=0.2)
def test_ioi_holds_over_64_templated_prompts():
    """The same IOI claims over Wang et al.'s templates x names (ABBA and BABA): the answer
    is carried by the repeated name (S2) through layer 20 and read at the end (END) late."""


def test_ioi_mlp_sweep_is_sparse(interp_model):
    result = interp_model.activation_patching(IOI_CLEAN, IOI_CORRUPTED, **IOI, site="mlp_out")
    assert (abs(result.recovery[:, :9]) < 1e-6).all()  # before the names differ: no effect


PATCHSCOPE_SOURCE = "Amazon's former CEO attended Oscars"


@pytest.mark.patchscope(PATCHSCOPE_SOURCE, " CEO", layer=[0, 1], expect="CEO")
def test_patchscope_reads_the_token_identity_early():
    """Patched into the identity prompt, the early hidden state of ' CEO' says 'CEO'."""


def test_patchscope_identity_fades_with_depth(interp_model):
    result = interp_model.patchscope(PATCHSCOPE_SOURCE, " CEO", layer=range(30), expected="CEO")
    assert result.prob(0) > 5 * result.prob(29)
    assert not any(text.startswith("CEO") for text in result.continuations[10:])


REVIEW = "I think this movie is"
LOVE = dict(positive="I love this", negative="I hate this", layer=16, positions=1)


@pytest.mark.steering(REVIEW, **LOVE, coef=[1, 2], target=" great", foil=" terrible",
                      min_delta=2)
@pytest.mark.steering(REVIEW, **LOVE, coef=-2, target=" great", foil=" terrible", max_delta=-2)
@pytest.mark.steering(REVIEW, **LOVE, coef=4, target=" great", generation_contains="worth",
                      max_new_tokens=8)
def test_love_minus_hate_steers_the_review():
    """ActAdd: the love - hate direction at layer 16 makes the review warmer (and colder)."""


@pytest.mark.steering(prompts="reviews.jsonl", **LOVE, coef=2, target=" great",
                      foil=" terrible", min_delta=1)
@pytest.mark.steering(prompts="reviews.jsonl", **LOVE, coef=2, target=" great",
                      foil=" terrible", min_delta=1, control=8, stat="fraction",
                      min_fraction=0.6)
def test_love_minus_hate_steers_many_reviews_beyond_random_vectors():
    """Over 8 review openings the warm shift holds on average, and on most of them it beats
    8 random vectors of the same norm (a negative control)."""


def test_steering_is_monotone_in_coef_and_zero_is_a_no_op(interp_model):
    v = interp_model.steering_vector("I love this", "I hate this", layer=16)
    result = interp_model.steer(REVIEW, v, layer=16, coef=[0, 0.5, 1, 2], positions=1,
                                target=" great", foil=" terrible")
    assert result.delta[0] == 0 and result.kl[0] == 0
    assert list(result.delta) == sorted(result.delta)


@pytest.mark.attention(kind="induction", head=(18, 6), min_score=0.7)
@pytest.mark.attention(kind="previous_token", head=(16, 0), min_score=0.8)
@pytest.mark.attention(kind="induction", min_score=0.8)
def test_induction_and_previous_token_heads():
    """SmolLM2 has induction heads in layers 16-18 and previous-token heads feeding them."""


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


@pytest.mark.next_token(FACT, " Paris")
@pytest.mark.next_token("The Eiffel Tower is in the city of", " Paris", min_prob=0.3)
def test_next_token_is_paris():
    """The GPT-2 tutorial's first check, as a marker."""


@pytest.mark.perplexity(prompts="texts.txt", stat="median", max=100)
@pytest.mark.perplexity(prompts="texts_reversed.txt", stat="median", min=1000, max=30000)
def test_perplexity_tells_text_from_word_salad():
    """Plain sentences are predictable; the same words in reverse order are not, though a
    model that learned the words still beats chance on them (SmolLM2: median 4,756, 95% CI
    [2,027, 16,799]; a re-initialised one: 53,366, near the 49,152-token vocabulary)."""


@pytest.mark.generation(FACT, contains="Paris", max_new_tokens=4)
@pytest.mark.generation(prompts=[dict(prompt=row["prompt"], contains=row["target"].strip())
                                 for row in capitals()],
                        max_new_tokens=4, stat="fraction", min_fraction=0.5)
def test_greedy_answers_name_the_capital():
    """What the model writes, checked by content, not by exact text."""
