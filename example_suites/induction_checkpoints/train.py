"""Train a tiny attention-only transformer on repeated random token spans; save checkpoints.

Run: python example_suites/induction_checkpoints/train.py --out checkpoints [--steps 400]
Writes Hugging Face directories ``checkpoints/step_00000`` ... (config, safetensors, tokenizer),
each loadable with ``pytest --interp-model checkpoints/step_NNNNN``. The model is a 2-layer
Llama whose MLPs are zeroed and frozen (attention-only), with a 512-word tokenizer
(``w0`` ... ``w509``). Seeded: the same arguments give the same checkpoints, on CPU in well
under 3 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

VOCAB = 512
SPECIAL = ("<unk>", "<pad>")


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(SPECIAL)}
    vocab |= {f"w{i}": len(SPECIAL) + i for i in range(VOCAB - len(SPECIAL))}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")


def make_model(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
        tie_word_embeddings=False, architectures=["LlamaForCausalLM"],
    )
    model = LlamaForCausalLM(config)
    for layer in model.model.layers:  # attention-only: the MLPs add exactly zero
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
        for p in layer.mlp.parameters():
            p.requires_grad_(False)
    return model


def batch(generator: torch.Generator, size: int, span: int) -> torch.Tensor:
    """``size`` rows of a random span of word ids, repeated twice."""
    ids = torch.randint(len(SPECIAL), VOCAB, (size, span), generator=generator)
    return torch.cat([ids, ids], dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--save", type=int, nargs="*", default=None,
                        help="steps to save at (default: every steps/8, 0 to steps: 9 "
                             "checkpoints)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    every = max(1, args.steps // 8)
    save = sorted(set(args.save if args.save is not None else
                      [*range(0, args.steps, every), args.steps]))
    torch.manual_seed(args.seed)
    tokenizer, model = make_tokenizer(), make_model(args.seed)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=3e-3, weight_decay=0.0)
    generator = torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    for step in range(args.steps + 1):
        if step in save:
            path = args.out / f"step_{step:05d}"
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        if step == args.steps:
            break
        ids = batch(generator, 32, 20)
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.perf_counter() - start:.1f}s",
                  flush=True)
    print(f"saved {', '.join(f'step_{s:05d}' for s in save)} under {args.out} in "
          f"{time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    main()
