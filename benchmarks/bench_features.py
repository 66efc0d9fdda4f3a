"""Dictionary features on SmolLM2 with the example suite's SAE (top-k, 4,096 latents at
resid_post 15): ours vs one batched forward pass that reads the site, in one run.

Run: .venv/bin/python benchmarks/bench_features.py
Prints, best of 3 (each call with the memo cleared, so nothing is reused between repeats):
- ``features`` over 64 prompts (12 tokens each, one batch) vs one forward pass of the same
  64 rows reading the SAE's site and keeping the last position's logits; the latent labels
  (top tokens of each shown latent's decoder direction through the unembedding) are made
  once per latent and kept, so the first call is printed apart;
- ``feature_attribution`` over every latent at every position of a 14-token IOI prompt (one
  forward and one backward pass) vs one forward pass of it;
- the exact check of the top 10 (position, latent) nodes, each zeroed in a patched run: how
  many agree in sign with the estimate.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pytest_interp.backends.base import Tokens
from pytest_interp.backends.load import load_backend
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest

SAE = str(Path(__file__).resolve().parents[1] / "example_suites/smollm2/sae/resid_post_15")
IOI = "When Mary and John went to the store, John gave a drink to"
WORDS = ("the cat dog sat ran on mat park house tree river city king queen green blue red "
         "small big old new").split()


def best_of(run: object, model: InterpModel, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        model.forget()
        start = time.perf_counter()
        run()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    model = InterpModel(load_backend(ModelRequest("smollm2-135m")))
    sae = model.dictionary(SAE)
    prompts = []
    for i in range(400):
        text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(12))
        if model.tokens(text).length == 12 and text not in prompts:
            prompts.append(text)
        if len(prompts) == 64:
            break
    tokens = Tokens.stack([model.tokens(p) for p in prompts])
    print(f"SmolLM2-135M, {sae}; CPU threads {torch.get_num_threads()}")

    def forward() -> None:
        model.forward(tokens, read={sae.site}, logits_to_keep=1)

    start = time.perf_counter()
    model.features_of(prompts, SAE)
    first = time.perf_counter() - start
    base = best_of(forward, model)
    ours = best_of(lambda: model.features_of(prompts, SAE), model)
    print(f"  features, 64 prompts x 12 tokens: {ours:.3f} s vs one forward {base:.3f} s -> "
          f"{ours / base:.2f}x (first call, labelling each latent once: {first:.3f} s)")

    ioi = model.tokens(IOI)

    def attribution() -> None:
        model.feature_attribution(IOI, sae=SAE, answer=" Mary", foil=" John")

    one = best_of(lambda: model.forward(ioi, logits_to_keep=1), model)
    attr = best_of(attribution, model)
    print(f"  attribution, every latent at {ioi.length} tokens: {attr:.3f} s vs one forward "
          f"{one:.3f} s -> {attr / one:.2f}x")
    result = model.feature_attribution(IOI, sae=SAE, answer=" Mary", foil=" John",
                                       verify_top_k=10)
    agree = sum((score > 0) == (result.exact[(p, latent)] > 0)
                for p, latent, score in result.top(10))
    print(f"  exact check of the top 10 nodes: {agree}/10 agree in sign with the estimate")
    for p, latent, score in result.top(10):
        print(f"    position {p:2} ({ioi.strs[0][p]!r:>9}) latent {latent:5}: estimate "
              f"{score:+.3f}, exact {result.exact[(p, latent)]:+.3f}  {result.labels[latent]}")


if __name__ == "__main__":
    main()
