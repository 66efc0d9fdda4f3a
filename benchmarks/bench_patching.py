"""Full resid_pre activation-patching sweep on SmolLM2 IOI: ours vs TransformerLens.

Run: .venv/bin/python benchmarks/bench_patching.py
Prints, in one run: TransformerLens's get_act_patch_resid_pre (one forward per patch) and our
batched sweep on both backends, wall seconds, the ratio, the max abs diff of the patched logit
diffs, and peak RSS. Target: >= 8x faster.
"""

from __future__ import annotations

import resource
import time

import torch

from pytest_interp.model import InterpModel, load_backend
from pytest_interp.probes.patching import activation_patching
from pytest_interp.settings import ModelRequest

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    from transformer_lens.patching import get_act_patch_resid_pre

    tl_model = InterpModel(load_backend(ModelRequest("smollm2-135m", "transformer_lens")))
    nn_model = InterpModel(load_backend(ModelRequest("smollm2-135m", "nnsight")))
    bridge = tl_model.backend.bridge
    clean, corrupted = tl_model.tokens(CLEAN).tensor(), tl_model.tokens(CORRUPTED).tensor()
    mary, john = tl_model.vocab.id(" Mary"), tl_model.vocab.id(" John")
    print(f"SmolLM2-135M IOI, {clean.shape[1]} tokens x {tl_model.info.n_layers} layers = "
          f"{clean.shape[1] * tl_model.info.n_layers} resid_pre patches; "
          f"CPU threads {torch.get_num_threads()}; peak RSS after load {peak_rss_mib():.0f} MiB")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, mary] - logits[:, -1, john]).mean()

    start = time.perf_counter()
    with torch.inference_mode():
        _, clean_cache = bridge.run_with_cache(clean)
        theirs = get_act_patch_resid_pre(bridge, corrupted, clean_cache, metric)
    t_theirs = time.perf_counter() - start
    rss_theirs = peak_rss_mib()
    print(f"TransformerLens get_act_patch_resid_pre: {t_theirs:7.2f} s   peak RSS "
          f"{rss_theirs:.0f} MiB")
    for name, model in (("transformer_lens", tl_model), ("nnsight", nn_model)):
        model.memo.clear()  # time the clean/corrupted runs too
        start = time.perf_counter()
        ours = activation_patching(model, CLEAN, CORRUPTED, answer=" Mary", foil=" John")
        t_ours = time.perf_counter() - start
        diff = abs(ours.patched - theirs.cpu().numpy()).max()
        print(f"pytest-interp ({name:16}):   {t_ours:7.2f} s   {t_theirs / t_ours:5.1f}x faster   "
              f"max abs diff {diff:.2e}   peak RSS {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
