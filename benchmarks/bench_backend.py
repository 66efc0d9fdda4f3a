"""SmolLM2 load time and per-forward time: raw HF vs the TL and nnsight adapters.

Run: .venv/bin/python benchmarks/bench_backend.py [--repeats 40]
Prints load seconds, then the median seconds of one forward on a 16-token prompt (plain,
and reading resid_post at every layer), each adapter as a ratio to raw HF. Target: <= 1.15x.
"TL bridge itself" is TransformerLens's own call (bridge() / run_with_cache), no adapter:
the TL adapter's overhead over it is ours, its overhead over raw HF is TransformerLens's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pytest_interp.backends.base import Site, Tokens, all_sites
from pytest_interp.backends.loading import load_hf, resolve_spec
from pytest_interp.backends.nnsight import NNsightBackend
from pytest_interp.backends.transformer_lens import TransformerLensBackend

PROMPT = "The Eiffel Tower is in the city of Paris, and the Colosseum is in the city of"


def median_seconds(fns: dict[str, object], repeats: int) -> dict[str, float]:
    """Median wall time of each function, timed round-robin so drift hits all alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    resolved = resolve_spec("smollm2-135m")
    load_hf(resolved)  # make sure the one-time GGUF conversion is not in the timings

    start = time.perf_counter()
    raw = load_hf(resolved)
    t_raw = time.perf_counter() - start
    start = time.perf_counter()
    tl = TransformerLensBackend(load_hf(resolved))
    t_tl = time.perf_counter() - start
    start = time.perf_counter()
    nn = NNsightBackend(load_hf(resolved))
    t_nn = time.perf_counter() - start

    full = tl.tokenize(PROMPT)
    tokens = Tokens((full.ids[0][:16],), (full.strs[0][:16],))
    ids = tokens.tensor()
    resid = all_sites(tl.info.n_layers, ("resid_post",))
    hidden_layers = list(range(tl.info.n_layers))

    def hf_plain() -> None:
        with torch.inference_mode():
            raw.model(ids)

    def hf_resid() -> None:
        with torch.inference_mode():
            out = raw.model(ids, output_hidden_states=True)
            [out.hidden_states[i + 1] for i in hidden_layers]

    def tl_bridge_plain() -> None:
        with torch.inference_mode():
            tl.bridge(ids, return_type="logits")

    def tl_bridge_resid() -> None:
        with torch.inference_mode():
            tl.bridge.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))

    rows = [
        ("raw HF", hf_plain, hf_resid),
        ("TL bridge itself", tl_bridge_plain, tl_bridge_resid),
        ("TL adapter", lambda: tl.run(tokens), lambda: tl.run(tokens, read=resid)),
        ("nnsight adapter", lambda: nn.run(tokens), lambda: nn.run(tokens, read=resid)),
    ]
    print(f"SmolLM2-135M, 16-token prompt, CPU threads {torch.get_num_threads()}, "
          f"median of {args.repeats}")
    print(f"load seconds (from the converted cache): raw HF {t_raw:.2f}, "
          f"TL adapter {t_tl:.2f}, nnsight adapter {t_nn:.2f}")
    plain = median_seconds({name: fn for name, fn, _ in rows}, args.repeats)
    reads = median_seconds({name: fn for name, _, fn in rows}, args.repeats)
    print(f"{'':20}{'forward s':>11}{'ratio':>8}{'+30 reads s':>14}{'ratio':>8}")
    for name, _, _ in rows:
        print(f"{name:20}{plain[name]:11.4f}{plain[name] / plain['raw HF']:7.2f}x"
              f"{reads[name]:14.4f}{reads[name] / reads['raw HF']:7.2f}x")
    last = Site(tl.info.n_layers - 1, "resid_post")
    diff = (tl.run(tokens, read=[last]).acts[last] - nn.run(tokens, read=[last]).acts[last])
    print(f"TL vs nnsight max abs diff at {last}: {diff.abs().max().item():.2e}")


if __name__ == "__main__":
    main()
