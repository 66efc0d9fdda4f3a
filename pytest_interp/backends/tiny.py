"""backends layer: configs of the seeded tiny random models, one per family (``tiny-random-<key>``).

3 layers, d_model 64, 4 heads (2 key/value heads where the family has grouped queries),
SmolLM2's tokenizer. Gemma's get a sliding window of 4 tokens and soft-capped logits, so the
test prompts exercise both; GPT-NeoX's blocks are parallel, as Pythia's.
"""

from __future__ import annotations

from typing import Any

from ..errors import ModelSpecError

_COMMON: dict[str, Any] = dict(bos_token_id=1, eos_token_id=2, pad_token_id=2,
                               initializer_range=0.1)
_DECODER: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=512, **_COMMON)


def tiny_config(key: str, vocab_size: int) -> Any:
    """The config of ``tiny-random-<key>`` for a tokenizer of ``vocab_size`` tokens."""
    import transformers as tf

    builders: dict[str, Any] = {
        "llama": lambda: tf.LlamaConfig(
            vocab_size=vocab_size, tie_word_embeddings=True, architectures=["LlamaForCausalLM"],
            **_DECODER),
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=vocab_size, n_embd=64, n_layer=3, n_head=4, n_positions=512,
            architectures=["GPT2LMHeadModel"], resid_pdrop=0.0, embd_pdrop=0.0,
            attn_pdrop=0.0, **_COMMON),
        "mistral": lambda: tf.MistralConfig(
            vocab_size=vocab_size, architectures=["MistralForCausalLM"], **_DECODER),
        "qwen2": lambda: tf.Qwen2Config(
            vocab_size=vocab_size, architectures=["Qwen2ForCausalLM"], **_DECODER),
        "qwen3": lambda: tf.Qwen3Config(
            vocab_size=vocab_size, head_dim=16, architectures=["Qwen3ForCausalLM"], **_DECODER),
        "gemma2": lambda: tf.Gemma2Config(
            vocab_size=vocab_size, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
            final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
            architectures=["Gemma2ForCausalLM"], **_DECODER),
        "gemma3": lambda: tf.Gemma3TextConfig(
            vocab_size=vocab_size, head_dim=16, sliding_window=4, query_pre_attn_scalar=16,
            final_logit_softcapping=30.0, layer_types=["sliding_attention", "full_attention",
                                                       "sliding_attention"],
            architectures=["Gemma3ForCausalLM"], **_DECODER),
        "gpt-neox": lambda: tf.GPTNeoXConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=512,
            use_parallel_residual=True, hidden_dropout=0.0, attention_dropout=0.0,
            architectures=["GPTNeoXForCausalLM"], **_COMMON),
        "olmo": lambda: tf.OlmoConfig(
            vocab_size=vocab_size, architectures=["OlmoForCausalLM"], **_DECODER),
        "olmo2": lambda: tf.Olmo2Config(
            vocab_size=vocab_size, architectures=["Olmo2ForCausalLM"], **_DECODER),
        "phi3": lambda: tf.Phi3Config(
            vocab_size=vocab_size, original_max_position_embeddings=512,
            architectures=["Phi3ForCausalLM"], **_DECODER),
    }
    if key not in builders:
        raise ModelSpecError(f"no tiny random model tiny-random-{key}: use one of "
                             f"{', '.join('tiny-random-' + k for k in builders)}")
    return builders[key]()
