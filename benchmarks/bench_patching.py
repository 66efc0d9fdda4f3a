"""Exact resid_pre activation-patching sweeps on SmolLM2: ours vs TransformerLens.

Run: .venv/bin/python benchmarks/bench_patching.py [--long-layers 6]
Prints, in one run, for the IOI prompt (every layer x position) and a 64-token prompt
corrupted near its end or from its second token on (every position of every
``30 // long-layers``-th layer, the same cells on both sides):
TransformerLens's own patching (one forward per patch), our sweep on both backends, and our
sweep without suffix-only recomputation (every patched row recomputes the whole prompt, as
before), wall seconds, ratios, the max abs diff of the patched logit diffs and peak RSS.
Targets: >= 25x on IOI, >= 50x on 64 tokens.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import torch

from pytest_interp.backends.load import load_backend
from pytest_interp.model import InterpModel
from pytest_interp.probes import patching
from pytest_interp.settings import ModelRequest

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
LONG_CLEAN = (
    "The meeting had run long, and by the time the last slide was shown most people had "
    "stopped listening. Afterwards, in the quiet kitchen down the hall, Mary and John made "
    "coffee and talked about the weekend, the weather and the new project plans that almost nobody "
    "had read yet. Later that evening John gave a book to"
)
LONG_CORRUPTED = LONG_CLEAN.replace("John gave", "Mary gave")  # differs near the end
EARLY_CORRUPTED = LONG_CLEAN.replace("The meeting", "The lecture")  # differs at position 1


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def whole_prompt() -> Any:
    """Our sweep as it was before suffix-only recomputation: one pass per layer, each from
    that layer and from position 0."""

    def passes(patches: Sequence[Any], n_layers: int, n_pos: int, batch_size: int) -> list[Any]:
        out = []
        for layer in sorted({p.layer for p in patches}):
            rows = [p for p in patches if p.layer == layer]
            out += [(layer, 0, rows[lo:lo + batch_size])
                    for lo in range(0, len(rows), batch_size)]
        return out

    with mock.patch.object(patching, "_passes", passes):
        yield


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def case(title: str, models: dict[str, InterpModel], clean: str, corrupted: str,
         layers: list[int]) -> None:
    from transformer_lens.patching import generic_activation_patch, layer_pos_patch_setter

    tl = models["transformer_lens"]
    bridge = tl.backend.bridge
    clean_ids, corrupted_ids = tl.tokens(clean).tensor(), tl.tokens(corrupted).tensor()
    n_pos = clean_ids.shape[1]
    mary, john = tl.vocab.id(" Mary"), tl.vocab.id(" John")
    print(f"\n{title}: {n_pos} tokens x {len(layers)} layers = {n_pos * len(layers)} resid_pre "
          "patches")

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, mary] - logits[:, -1, john]).mean()

    def theirs_fn() -> torch.Tensor:
        import pandas as pd

        with torch.inference_mode():
            _, clean_cache = bridge.run_with_cache(clean_ids)
            index = pd.DataFrame([(layer, pos) for layer in layers for pos in range(n_pos)],
                                 columns=["layer", "pos"])
            return generic_activation_patch(
                bridge, corrupted_ids, clean_cache, metric, layer_pos_patch_setter,
                "resid_pre", index_df=index)

    theirs, t_theirs = timed(theirs_fn)
    theirs_grid = theirs.cpu().numpy().reshape(len(layers), n_pos)
    print(f"  TransformerLens (one forward per patch): {t_theirs:7.2f} s   "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    for name, model in models.items():
        def ours_fn(model: InterpModel = model) -> np.ndarray:
            model.memo.clear()  # time the clean/corrupted runs too
            spec = patching.Patching(clean, corrupted, answer=" Mary", foil=" John",
                                     layers=tuple(layers))
            return patching.activation_patching(model, spec).patched[layers]

        ours, t_ours = timed(ours_fn)
        with whole_prompt():
            before, t_before = timed(ours_fn)
        diff = np.abs(ours - theirs_grid).max()
        print(f"  pytest-interp ({name:16}): {t_ours:7.2f} s   {t_theirs / t_ours:5.1f}x "
              f"faster than TL   max abs diff {diff:.2e}   peak RSS {peak_rss_mib():.0f} MiB")
        print(f"    without suffix-only recompute:  {t_before:7.2f} s   "
              f"{t_theirs / t_before:5.1f}x faster than TL   suffix-only gain "
              f"{t_before / t_ours:.2f}x   max abs diff {np.abs(ours - before).max():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--long-layers", type=int, default=6,
                        help="layers of the 64-token case (evenly spaced; both sides alike)")
    args = parser.parse_args()
    models = {backend: InterpModel(load_backend(ModelRequest("smollm2-135m", backend)))
              for backend in ("transformer_lens", "nnsight")}
    info = models["nnsight"].info
    print(f"SmolLM2-135M, CPU threads {torch.get_num_threads()}; peak RSS after load "
          f"{peak_rss_mib():.0f} MiB")
    case("IOI", models, CLEAN, CORRUPTED, list(range(info.n_layers)))
    n_long = models["nnsight"].tokens(LONG_CLEAN).length
    assert n_long == 64, f"the long prompt has {n_long} tokens, not 64"
    step = max(1, info.n_layers // args.long_layers)
    layers = list(range(0, info.n_layers, step))
    case("64-token prompt, names swapped near the end", models, LONG_CLEAN, LONG_CORRUPTED,
         layers)
    case("64-token prompt, differing from the 2nd token on", models, LONG_CLEAN,
         EARLY_CORRUPTED, layers)


if __name__ == "__main__":
    main()
