"""The 30x30 patchscope layer grid on SmolLM2: our batched sweep vs a loop of per-pair runs.

Run: .venv/bin/python benchmarks/bench_patchscope.py [--layers N] [--max-new-tokens K]
The loop is the obvs way, done with raw Hugging Face forward hooks (lighter than nnsight, so
the ratio is conservative): for each (source layer, target layer) pair, one source forward
and one greedy ``generate`` with the patch hooked in. Prints both wall times, the ratio,
whether every pair decodes to the same tokens, and peak RSS. Target: >= 8x faster.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_interp.backends.load import load_backend
from pytest_interp.backends.loading import load_hf, resolve_spec
from pytest_interp.model import InterpModel
from pytest_interp.settings import IDENTITY_PROMPT, ModelRequest
from tests.hf_reference import hf_patchscope

SOURCE = "Amazon's former CEO attended Oscars"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30, help="grid over layers 0..N-1")
    parser.add_argument("--max-new-tokens", type=int, default=3)
    args = parser.parse_args()
    layers, steps = list(range(args.layers)), args.max_new_tokens

    raw = load_hf(resolve_spec("smollm2-135m"))
    print(f"SmolLM2-135M patchscope grid: {len(layers)}x{len(layers)} = {len(layers) ** 2} "
          f"(source, target) pairs, {steps} new tokens each; CPU threads "
          f"{torch.get_num_threads()}; peak RSS after load {peak_rss_mib():.0f} MiB")
    results = {}
    for backend in ("transformer_lens", "nnsight"):
        model = InterpModel(load_backend(ModelRequest("smollm2-135m", backend)))
        start = time.perf_counter()
        result = model.patchscope_sweep(SOURCE, " CEO", layers=layers, target_layers=layers,
                                        mode="grid", max_new_tokens=steps)
        results[backend] = (time.perf_counter() - start, result)

    _, ours = results["transformer_lens"]
    src, tgt = list(ours_ids(raw, SOURCE)), list(ours_ids(raw, IDENTITY_PROMPT))
    start = time.perf_counter()
    loop = [tuple(hf_patchscope(raw.model, src, ours.source_position, s, tgt,
                                ours.target_position, t, steps, raw.tokenizer.eos_token_id))
            for s, t in ours.pairs]
    t_loop = time.perf_counter() - start
    print(f"loop of per-pair source forward + HF generate:  {t_loop:7.2f} s")
    for backend, (seconds, result) in results.items():
        same = sum(a[:len(b)] == b for a, b in zip(result.token_ids, loop, strict=True))
        print(f"pytest-interp batched ({backend:16}): {seconds:7.2f} s   "
              f"{t_loop / seconds:5.1f}x faster   same tokens {same}/{len(loop)} pairs")
    print(f"peak RSS {peak_rss_mib():.0f} MiB")


def ours_ids(raw, text: str) -> list[int]:
    return raw.tokenizer(text)["input_ids"]


if __name__ == "__main__":
    main()
