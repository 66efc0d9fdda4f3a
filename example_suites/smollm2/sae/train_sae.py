"""Train the example suite's sparse autoencoder: top-k, 4,096 latents, on SmolLM2-135M's
residual stream after block 15, from text that installs offline by name.

    apt-get install fortunes          # the Debian fortune cookies, 2.6 MB of text
    python example_suites/smollm2/sae/train_sae.py collect   # ~10 min on 2 cores
    python example_suites/smollm2/sae/train_sae.py train     # ~12 min
    python example_suites/smollm2/sae/train_sae.py save      # SAELens layout, fp16
    python example_suites/smollm2/sae/train_sae.py find      # the latents the suite tests

The corpus is every fortune file (one document per fortune) and Python's own ``pydoc_data``
help topics, shuffled with a fixed seed, cut into 128-token windows. The first position of
each window is left out: it is SmolLM2's attention sink, with a norm ~100x the others'. So are
the 0.02% of later tokens that act as sinks too (mostly a newline after a newline), by the
same norm: above OUTLIER x the median.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
WORK = Path("/tmp/sae-smollm2")  # activations and checkpoints (not committed)
OUT = HERE / "resid_post_15"
LAYER, WINDOW, SEED = 15, 128, 0
N_LATENTS, K, K_AUX, DEAD_AFTER = 4096, 32, 256, 200_000
BATCH, EPOCHS, OUTLIER = 4096, 4, 10.0
FORTUNES = Path("/usr/share/games/fortunes")


def corpus() -> list[str]:
    """The documents: each fortune, then each pydoc topic; shuffled with SEED."""
    docs = []
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name in ("art", "ascii-art") or not path.is_file():
            continue  # .dat indexes, .u8 links, and pictures drawn in characters
        text = path.read_text(encoding="utf-8", errors="replace")
        docs += [d.strip() for d in text.split("\n%\n") if d.strip()]
    from pydoc_data.topics import topics

    docs += [topics[k].strip() for k in sorted(topics)]
    random.Random(SEED).shuffle(docs)
    return docs


def collect() -> None:
    """Residual activations after block LAYER, positions 1..127 of each window, fp16."""
    from pytest_interp import load_hf

    model, tok = load_hf("smollm2-135m")
    model.eval()
    ids = tok("\n\n".join(corpus())).input_ids
    windows = torch.tensor(ids[: len(ids) // WINDOW * WINDOW]).view(-1, WINDOW)
    print(f"{len(ids):,} tokens, {len(windows):,} windows", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    acts = np.lib.format.open_memmap(WORK / "acts.npy", mode="w+", dtype=np.float16,
                                     shape=(len(windows) * (WINDOW - 1), model.config.hidden_size))
    kept: dict[str, torch.Tensor] = {}

    class Stop(Exception):
        pass

    def hook(module, args, out):
        kept["x"] = out[0] if isinstance(out, tuple) else out
        raise Stop

    model.model.layers[LAYER].register_forward_hook(hook)
    start, row = time.time(), 0
    with torch.inference_mode():
        for lo in range(0, len(windows), 16):
            try:
                model(windows[lo:lo + 16])
            except Stop:
                pass
            x = kept["x"][:, 1:].reshape(-1, acts.shape[1])
            acts[row:row + len(x)] = x.numpy().astype(np.float16)
            row += len(x)
            if lo % 800 == 0:
                print(f"{row:,} tokens in {time.time() - start:.0f} s", flush=True)
    acts.flush()
    np.save(WORK / "windows.npy", windows.numpy())


def train() -> None:
    """Top-k SAE (k=K) with an AuxK loss for dead latents, as sparsify trains them; inputs
    scaled so their mean norm is sqrt(d); unit-norm decoder rows."""
    torch.manual_seed(SEED)
    acts = torch.from_numpy(np.load(WORK / "acts.npy"))
    norms = acts.float().norm(dim=-1)
    acts = acts[norms <= OUTLIER * norms.median()]
    n, d = acts.shape
    print(f"{n:,} tokens kept, {len(norms) - n} sinks left out", flush=True)
    sample = acts[:: max(1, n // 20000)].float()
    scale = math.sqrt(d) / float(sample.norm(dim=-1).mean())
    w_dec = torch.randn(N_LATENTS, d)
    w_dec /= w_dec.norm(dim=-1, keepdim=True)
    w_dec.requires_grad_(True)
    w_enc = w_dec.detach().T.clone().requires_grad_(True)
    b_enc = torch.zeros(N_LATENTS, requires_grad=True)
    b_dec = (sample.mean(0) * scale).requires_grad_(True)
    lr = 2e-4 / math.sqrt(N_LATENTS / 2**14)
    opt = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=lr)
    since_fired = torch.zeros(N_LATENTS, dtype=torch.long)
    steps = EPOCHS * (n // BATCH)
    start = time.time()
    for step in range(steps):
        if step % (n // BATCH) == 0:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(step))
        lo = step % (n // BATCH) * BATCH
        x = acts[order[lo:lo + BATCH]].float() * scale
        pre = torch.relu((x - b_dec) @ w_enc + b_enc)
        top, idx = pre.topk(K, dim=-1)
        x_hat = torch.einsum("bk,bkd->bd", top, w_dec[idx]) + b_dec
        err = x - x_hat
        total = (x - x.mean(0)).pow(2).sum()
        fvu = err.pow(2).sum() / total
        fired = torch.zeros(N_LATENTS, dtype=torch.bool)
        fired[idx.flatten()] = True
        since_fired += BATCH
        since_fired[fired] = 0
        dead = since_fired > DEAD_AFTER
        loss = fvu
        if dead.any():  # AuxK: the dead latents' top-k_aux reconstruct the error
            k_aux = min(K_AUX, int(dead.sum()))
            aux_pre = pre.masked_fill(~dead, 0.0)
            a_top, a_idx = aux_pre.topk(k_aux, dim=-1)
            e_hat = torch.einsum("bk,bkd->bd", a_top, w_dec[a_idx])
            loss = loss + (e_hat - err.detach()).pow(2).sum() / err.detach().pow(2).sum() / 32
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():  # keep decoder rows unit-norm: drop the gradient along them
            w_dec.grad -= (w_dec.grad * w_dec).sum(-1, keepdim=True) * w_dec
        opt.step()
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=-1, keepdim=True)
        if step % 50 == 0 or step == steps - 1:
            print(f"step {step}/{steps} fvu {float(fvu.detach()):.4f} dead {int(dead.sum())} "
                  f"{time.time() - start:.0f} s", flush=True)
    torch.save({"w_enc": w_enc.detach(), "b_enc": b_enc.detach(), "w_dec": w_dec.detach(),
                "b_dec": b_dec.detach(), "scale": scale}, WORK / "sae.pt")


def save() -> None:
    """Fold the input scale into the weights (exactly: top-k sees the same pre-activations)
    and write SAELens's layout in fp16: cfg.json + sae_weights.safetensors."""
    from safetensors.torch import save_file

    s = torch.load(WORK / "sae.pt")
    scale = s["scale"]
    tensors = {"W_enc": s["w_enc"] * scale, "b_enc": s["b_enc"], "W_dec": s["w_dec"] / scale,
               "b_dec": s["b_dec"] / scale}
    OUT.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in tensors.items()},
              OUT / "sae_weights.safetensors")
    cfg = {"d_in": int(s["w_dec"].shape[1]), "d_sae": N_LATENTS, "dtype": "float16",
           "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
           "reshape_activations": "none", "k": K, "rescale_acts_by_decoder_norm": False,
           "metadata": {"model_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
                        "hook_name": f"blocks.{LAYER}.hook_resid_post",
                        "context_size": WINDOW, "prepend_bos": False,
                        "dataset_path": "fortunes + pydoc_data (train_sae.py)"},
           "architecture": "topk"}
    (OUT / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")


CODE = ("def area(width, height):", "print(len(items))", "for i in range(10):",
        "if isinstance(value, str):", "result = max(values, key=abs)", "return sorted(names)",
        "self.assertEqual(total, 4)", "with open(path) as f:", "x = dict(a=1, b=2)",
        "while not done(queue):", "raise ValueError(message)", "yield from walk(tree)")


def _firing(model, prompts: list[str], positions) -> np.ndarray:
    """The share of ``prompts`` on which each latent fires at the position ``positions(prompt
    tokens)`` picks: [n_latents]."""
    fired = np.zeros(N_LATENTS)
    for result in model.features_of(prompts, str(OUT)):
        for p in positions(result.str_tokens):
            fired[[i for i, _ in result.active(p)]] += 1 / len(prompts)
    return fired


def find() -> None:
    """The latents the suite tests, by what they fire on: on the capital in "The capital of X
    is Y" for most of 37 countries, and on the "(" of Python one-liners, each rarely on the
    corpus. Prints their strongest corpus contexts; writes labels.json."""
    from pytest_interp.backends.load import load_backend
    from pytest_interp.datasets import CAPITALS
    from pytest_interp.model import InterpModel
    from pytest_interp.probes.features import latent_labels
    from pytest_interp.settings import ModelRequest

    model = InterpModel(load_backend(ModelRequest("smollm2-135m")))
    sae = model.dictionary(str(OUT))
    acts = np.load(WORK / "acts.npy", mmap_mode="r")
    rows = np.random.default_rng(SEED).choice(len(acts), 50_000, replace=False)
    rows.sort()
    sample = torch.from_numpy(acts[rows].astype(np.float32))
    corpus = (sae.encode(sample) > 0).float().mean(0).numpy()  # firing rate on the corpus
    capital = _firing(model, [f"The capital of {c} is {a}" for c, a in CAPITALS],
                      lambda t: [len(t) - 1])
    code = _firing(model, list(CODE), lambda t: [i for i, x in enumerate(t) if x == "("])
    windows = np.load(WORK / "windows.npy")
    from pytest_interp.backends.loading import load_hf
    from pytest_interp.backends.specs import resolve_spec

    tok = load_hf(resolve_spec("smollm2-135m")).tokenizer
    labels = {}
    for name, share in (("capital", capital), ("code", code)):
        score = share - 20 * corpus
        best = [int(i) for i in np.argsort(-score)[:5]]
        tokens = latent_labels(model, sae, set(best))
        for i in best:
            print(f"{name}: latent {i} fires on {share[i]:.0%} of them and on {corpus[i]:.3%} "
                  f"of the corpus; its decoder direction promotes {tokens[i]}")
        latent = best[0]
        strongest = torch.topk(sae.encode(sample)[:, latent], 5).indices
        for j in strongest.tolist():
            row = int(rows[j])
            w, pos = row // (WINDOW - 1), 1 + row % (WINDOW - 1)
            print(f"    ...{tok.decode(windows[w, max(0, pos - 10):pos])!r} "
                  f"[{tok.decode(windows[w, pos:pos + 1])!r}]")
        labels[str(latent)] = {"capital": "place names: a capital city, a state or a country",
                               "code": "an opening parenthesis in Python code"}[name]
    (OUT / "labels.json").write_text(json.dumps(labels, indent=2) + "\n")
    print(labels)


if __name__ == "__main__":
    {"collect": collect, "train": train, "save": save, "find": find}[sys.argv[1]]()
