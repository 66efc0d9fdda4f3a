"""A tiny GGUF file for tests of the real conversion: the first 1,024 tokens of SmolLM2's
tokenizer (its special and byte tokens and first merges, read from its GGUF file) on a seeded
random llama of 2 layers and width 64, in float32 (under 1 MB)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

WIDTH, LAYERS, HIDDEN, HEADS, KV_HEADS, VOCAB = 64, 2, 128, 4, 2, 1024
BASE = 252  # SmolLM2's special and byte tokens; token BASE + i is merge i
TOKENIZER_FIELDS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                    "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                    "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix")


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write the tiny llama GGUF to ``path``."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    from pytest_interp.backends.loading import gguf_file, resolve_spec

    source = GGUFReader(gguf_file(resolve_spec("smollm2-135m")))
    vocab = VOCAB
    writer = GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(2048)
    writer.add_embedding_length(WIDTH)
    writer.add_feed_forward_length(HIDDEN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_rope_dimension_count(WIDTH // HEADS)
    for name in TOKENIZER_FIELDS:
        field = source.fields[name]
        kind = field.types[0]
        value = field.contents()
        if kind == GGUFValueType.ARRAY:
            writer.add_array(name, value[:VOCAB - BASE if name.endswith("merges") else VOCAB])
        else:
            writer.add_key_value(name, value, kind)
    rng = np.random.default_rng(seed)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    head = WIDTH // HEADS
    writer.add_tensor("token_embd.weight", weight(vocab, WIDTH))
    writer.add_tensor("output_norm.weight", np.ones(WIDTH, np.float32))
    for i in range(LAYERS):
        for name, shape in (("attn_q", (WIDTH, WIDTH)), ("attn_k", (KV_HEADS * head, WIDTH)),
                            ("attn_v", (KV_HEADS * head, WIDTH)),
                            ("attn_output", (WIDTH, WIDTH)), ("ffn_gate", (HIDDEN, WIDTH)),
                            ("ffn_up", (HIDDEN, WIDTH)), ("ffn_down", (WIDTH, HIDDEN))):
            writer.add_tensor(f"blk.{i}.{name}.weight", weight(*shape))
        for name in ("attn_norm", "ffn_norm"):
            writer.add_tensor(f"blk.{i}.{name}.weight", np.ones(WIDTH, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
