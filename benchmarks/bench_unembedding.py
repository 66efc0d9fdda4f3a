"""Last-position logits of a batch: the unembedding given a contiguous input (ours) vs HF's
strided slice of the hidden states (``logits_to_keep``'s own path).

Run: .venv/bin/python benchmarks/bench_unembedding.py
Prints, in one run, for SmolLM2 (49,152 tokens) and Gemma-3 (262,144) on the TransformerLens
backend: one forward pass of 8 and of 64 rows of 12 tokens keeping the last position's logits,
with the contiguous-input hook (``backends.common.contiguous_unembedding``) and with it
removed, seconds per pass (best of 3), the ratio and the max abs diff of the logits.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pytest_interp.backends.base import Tokens
from pytest_interp.backends.load import load_backend
from pytest_interp.settings import ModelRequest


def best_of(run: object, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(f"last-position logits of a batch of 12-token rows; CPU threads "
          f"{torch.get_num_threads()}")
    for spec in ("smollm2-135m", "gemma3-270m"):
        backend = load_backend(ModelRequest(spec))
        head = backend.bridge.original_model.get_output_embeddings()
        for rows in (8, 64):
            ids = tuple(tuple(range(1000 + r, 1012 + r)) for r in range(rows))
            tokens = Tokens(ids, tuple(("",) * 12 for _ in ids))

            def run(tokens: Tokens = tokens, backend: Any = backend) -> torch.Tensor:
                return backend.run(tokens, logits_to_keep=1).logits

            ours, kept = best_of(run), run()
            hooks = dict(head._forward_pre_hooks)
            head._forward_pre_hooks.clear()  # HF's strided slice straight into the linear layer
            try:
                strided, plain = best_of(run), run()
            finally:
                head._forward_pre_hooks.update(hooks)
            diff = (kept - plain).abs().max().item()
            print(f"  {spec:13} {rows:3} rows: contiguous {ours:6.3f} s, strided {strided:6.3f} s"
                  f" -> {strided / ours:4.1f}x; max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
