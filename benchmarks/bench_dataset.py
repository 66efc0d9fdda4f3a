"""A 64-prompt dataset expectation vs one batched forward of those 64 prompts, on SmolLM2.

Run: .venv/bin/python benchmarks/bench_dataset.py [--repeats 5] [--n 64]
The reference is the cheapest way to see all 64 prompts once: raw HF, one forward of the 64
IOI clean prompts padded to one length with an attention mask, last-position logits only
(as ours compute). Ours: a logit_diff dataset
(``prompts="ioi:64"``), a one-cell activation_patching dataset (clean, corrupted and patched
runs) and next_token; each printed as seconds and as a ratio to the reference, plus the naive
way (one forward per prompt). Target: <= 3x. Run it alone: other processes skew the ratios.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from bench_backend import median_seconds  # the same round-robin timing

from pytest_interp import dataset
from pytest_interp.backends.load import load_backend
from pytest_interp.backends.loading import load_hf, resolve_spec
from pytest_interp.datasets import ioi
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=64)
    args = parser.parse_args()
    rows = ioi(args.n)
    source = f"ioi:{args.n}"
    raw = load_hf(resolve_spec("smollm2-135m"))
    tokenizer = raw.tokenizer
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer([r["clean"] for r in rows], return_tensors="pt", padding=True)

    @torch.inference_mode()
    def reference() -> object:
        return raw.model(**batch, logits_to_keep=1).logits[:, -1]

    backends = {b: InterpModel(load_backend(ModelRequest("smollm2-135m", b)))
                for b in ("transformer_lens", "nnsight")}
    model = backends["transformer_lens"]

    def fresh(kind: str, **kwargs: object) -> Callable[[], object]:
        def run() -> object:
            model.forget()
            return dataset(model, kind, source, **kwargs)
        return run

    def naive() -> object:
        model.forget()
        return [model.logit_diff(r["clean"], r["answer"], r["foil"]) for r in rows]

    fns: dict[str, Callable[[], object]] = {
        "reference: one padded HF forward": reference,
        "logit_diff dataset": fresh("logit_diff", min=0),
        "next_token dataset": lambda: model.forget() or dataset(model,
            "next_token", [(r["clean"], r["answer"]) for r in rows], min_prob=1e-6),
        "activation_patching dataset (one cell)": fresh(
            "activation_patching", layer=15, position="S2", min_recovery=0),
        "naive: logit_diff one prompt at a time": naive,
    }
    times = median_seconds(fns, args.repeats)
    base = times["reference: one padded HF forward"]
    print(f"SmolLM2-135M, {args.n} IOI prompts, median of {args.repeats}, "
          f"{torch.get_num_threads()} threads")
    for name, seconds in times.items():
        print(f"  {name:<42} {seconds:7.3f} s  {seconds / base:5.2f}x")
    for name, m in backends.items():  # per-prompt values agree across backends
        values = dataset(m, "logit_diff", source, min=0).values
        print(f"  {name:<16} mean logit diff {sum(values) / len(values):.5f}")


if __name__ == "__main__":
    main()
