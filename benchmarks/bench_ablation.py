"""All-heads ablation sweep on SmolLM2 IOI: batched (one row per head) vs one forward per head.

Run: .venv/bin/python benchmarks/bench_ablation.py
Prints, in one run and on both backends: ``ablation_sweep`` (mean ablation of each of the
30 x 9 heads in turn, batched 64 rows per pass, each pass starting at its lowest layer, last
position only) against a loop of one full forward per head with the same edit, wall seconds,
the ratio and the max abs diff of the logit diffs.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from pytest_interp.backends.base import Edit
from pytest_interp.backends.load import load_backend
from pytest_interp.model import InterpModel
from pytest_interp.probes.ablation import part_means, universe
from pytest_interp.settings import ModelRequest

CLEAN = "When Mary and John went to the store, John gave a drink to"


def main() -> None:
    print(f"SmolLM2-135M IOI, mean ablation of every head; CPU threads {torch.get_num_threads()}")
    for backend in ("transformer_lens", "nnsight"):
        model = InterpModel(load_backend(ModelRequest("smollm2-135m", backend)))
        info = model.info
        mary, john = model.vocab.id(" Mary"), model.vocab.id(" John")
        tokens = model.tokens(CLEAN)
        model.ablation_sweep(CLEAN, answer=" Mary", foil=" John")  # warm up
        model.forget()
        start = time.perf_counter()
        sweep = model.ablation_sweep(CLEAN, answer=" Mary", foil=" John")
        t_ours = time.perf_counter() - start

        start = time.perf_counter()
        with torch.inference_mode():
            parts = universe({"head"}, info)
            means = part_means(model, [CLEAN], parts)
            loop = np.zeros((info.n_layers, info.n_heads))
            for part in parts:
                logits = model.forward(tokens, edits=[Edit(part.site, means[part],
                                                           head=part.head)]).logits[0, -1]
                loop[part.layer, part.head] = float(logits[mary] - logits[john])
        t_loop = time.perf_counter() - start
        diff = np.abs(sweep.values - loop).max()
        print(f"  {backend:16}: batched sweep {t_ours:6.2f} s, loop of {len(parts)} forwards "
              f"{t_loop:6.2f} s: {t_loop / t_ours:4.1f}x faster, max abs diff {diff:.1e}; "
              f"largest drops {', '.join(f'{name} {v:.2f}' for name, v in sweep.top(3))}")


if __name__ == "__main__":
    main()
