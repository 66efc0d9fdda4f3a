"""probes layer: lens readouts and tuned-lens training, written once against the Runner interface.

Block ``l``'s resid_post is decoded through the lens (``pytest_interp.lenses``: the logit lens
passes it through, a tuned lens applies its affine translator ``h + A h + b``), the final norm
and the unembedding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checks
from ..backends.base import Run, Tokens
from ..errors import InterpError
from ..lenses import LOGIT_LENS, Lens, TunedLens
from ..results import LensResult
from ..sites import Site, all_sites
from .batching import by_length
from .runner import Runner


def _positions(n_tokens: int, positions: int | Sequence[int] | None) -> tuple[int, ...]:
    if positions is None:
        return tuple(range(n_tokens))
    items = [positions] if isinstance(positions, int) else list(positions)
    return tuple(checks.position(pos, n_tokens) for pos in items)


@torch.inference_mode()
def run_lens(
    model: Runner, prompt: str, *, positions: int | Sequence[int] | None = -1,
    lens: Lens = LOGIT_LENS,
) -> LensResult:
    """Decode every block's resid_post at ``positions`` (None = all) through ``lens``."""
    tokens = model.tokens(prompt)
    if tokens.batch != 1:
        raise InterpError("a lens reads one prompt at a time; call it once per prompt")
    lens.check_fits(model.info)
    run = model.run(tokens, read=all_sites(model.info.n_layers, ("resid_post",)))
    return _decoded(model, lens, prompt, tokens.strs[0], _positions(tokens.length, positions),
                    run, 0)


def run_lenses(
    model: Runner, prompts: Sequence[str], *, positions: int | Sequence[int] | None = -1,
    lens: Lens = LOGIT_LENS, batch_size: int = 64,
) -> list[LensResult]:
    """``run_lens`` of each prompt, from one unpadded forward pass per token length (split to
    stay within ``--interp-memory``; a prompt given twice is run once); not memoised."""
    unique = list(dict.fromkeys(prompts))
    out = dict(lens_rows(model, unique, positions=positions, lens=lens, batch_size=batch_size))
    where = {prompt: i for i, prompt in enumerate(unique)}
    return [out[where[prompt]] for prompt in prompts]


def lens_rows(
    model: Runner, prompts: Sequence[str], *, positions: int | Sequence[int] | None = -1,
    lens: Lens = LOGIT_LENS, batch_size: int = 64,
) -> Iterator[tuple[int, LensResult]]:
    """``(i, run_lens of prompts[i])`` as ``run_lenses`` computes them, in the order of its
    passes: one readout at a time, for callers that keep only what they read from each."""
    lens.check_fits(model.info)
    n_layers = model.info.n_layers
    tokens = [model.tokens(prompt) for prompt in prompts]
    for group in by_length(tokens):
        length = tokens[group[0]].length
        pos = _positions(length, positions)
        rows = model.rows_per_pass(length, len(group), batch_size,
                                   logits=length + n_layers * len(pos))
        for lo in range(0, len(group), rows):
            chunk = group[lo:lo + rows]
            with torch.inference_mode():
                run = model.forward(Tokens.stack([tokens[i] for i in chunk]),
                                    read=all_sites(n_layers, ("resid_post",)))
            for row, i in enumerate(chunk):
                with torch.inference_mode():  # not held while the caller reads the result
                    result = _decoded(model, lens, prompts[i], tokens[i].strs[0], pos, run, row)
                yield i, result


def _decoded(model: Runner, lens: Lens, prompt: str, strs: tuple[str, ...],
             pos: tuple[int, ...], run: Run, row: int) -> LensResult:
    """Row ``row`` of ``run`` read through ``lens`` at ``pos``."""
    index = torch.tensor(pos, dtype=torch.long)
    hidden = torch.stack([lens.transform_hidden(run.acts[Site(layer, "resid_post")][row, index],
                                                layer)
                          for layer in range(model.info.n_layers)])  # [L, P, D]
    return LensResult(
        model=model.info.name, lens=lens.name, prompt=prompt, str_tokens=strs, positions=pos,
        logits=model.unembed(hidden).float().cpu().numpy(),
        final_logits=run.logits[row, index].float().cpu().numpy(), vocab=model.vocab,
    )


# ---------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 250
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 1e-3
    seq_len: int = 64
    batch: int = 4
    layers: tuple[int, ...] | None = None  # translator indices to train; None = all
    seed: int = 0
    checkpoint_every: int = 25


def _chunks(model: Runner, texts: Iterable[str], seq_len: int) -> list[tuple[int, ...]]:
    ids: list[int] = []
    for text in texts:
        ids.extend(model.vocab.encode(text))
    chunks = [tuple(ids[i:i + seq_len]) for i in range(0, len(ids) - seq_len + 1, seq_len)]
    if not chunks:
        raise InterpError(
            f"the training text has {len(ids)} tokens, fewer than one {seq_len}-token sequence: "
            "pass more text or a smaller --seq-len"
        )
    return chunks


def train_tuned_lens(
    model: Runner, texts: Iterable[str], out: str | Path, config: TrainConfig = TrainConfig(),
    *, resume: bool = True, progress: bool = True,
) -> TunedLens:
    """Fit translators by SGD (Nesterov) on KL(final || lens); save to ``out``, resumably.

    A checkpoint (``out/checkpoint.pt``) is written every ``checkpoint_every`` steps and on
    interruption; a later call with ``resume=True`` continues from it.
    """
    info = model.info
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chunks = _chunks(model, texts, config.seq_len)
    layers = tuple(range(info.n_layers)) if config.layers is None else config.layers
    for i in layers:
        info.check_layer(i, "translator")
    lens = TunedLens.identity(info.d_model, info.n_layers, base_model=info.name,
                              revision=info.revision)
    weight = torch.zeros(len(layers), info.d_model, info.d_model, requires_grad=True)
    bias = torch.zeros(len(layers), info.d_model, requires_grad=True)
    optimizer = torch.optim.SGD([weight, bias], lr=config.lr, momentum=config.momentum,
                                nesterov=True, weight_decay=config.weight_decay)
    step = 0
    checkpoint = out / "checkpoint.pt"
    if resume and checkpoint.is_file():
        state = torch.load(checkpoint, weights_only=True)
        if tuple(state["layers"]) != layers:
            raise InterpError(
                f"{checkpoint} trained translators {tuple(state['layers'])}, not {layers}: "
                "pass the same --layers, or --no-resume to start over"
            )
        with torch.no_grad():
            weight.copy_(state["weight"])
            bias.copy_(state["bias"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])

    def save_checkpoint() -> None:
        torch.save({"weight": weight.detach(), "bias": bias.detach(), "step": step,
                    "optimizer": optimizer.state_dict(), "layers": list(layers)}, checkpoint)

    reads = [Site(i, "resid_pre") for i in layers]
    generator = np.random.default_rng(config.seed)
    for _ in range(step):  # replay the batch draws so a resumed run sees the same batches
        generator.integers(0, len(chunks), config.batch)
    bar = _progress(config.steps, step, progress)
    try:
        while step < config.steps:
            picks = generator.integers(0, len(chunks), config.batch)
            batch = [chunks[i] for i in picks]
            tokens = Tokens(tuple(batch), tuple(("",) * config.seq_len for _ in batch))
            with torch.inference_mode():
                run = model.forward(tokens, read=reads)
            target = torch.log_softmax(run.logits.float(), -1).clone()  # leave inference mode
            loss = torch.zeros(())
            for j, i in enumerate(layers):
                hidden = run.acts[Site(i, "resid_pre")].float().clone()
                translated = hidden + hidden @ weight[j].T + bias[j]
                logp = torch.log_softmax(model.unembed(translated).float(), -1)
                loss = loss + (target.exp() * (target - logp)).sum(-1).mean()
            loss = loss / len(layers)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_([weight, bias], 1.0)
            optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(kl=f"{loss.item():.3f}")
            if step % config.checkpoint_every == 0:
                save_checkpoint()
    except KeyboardInterrupt:
        save_checkpoint()
        raise
    finally:
        bar.close()
    save_checkpoint()
    with torch.no_grad():
        for j, i in enumerate(layers):
            lens.weight[i] = weight[j].detach()
            lens.bias[i] = bias[j].detach()
    lens.path = str(out)
    lens.save(out)
    return lens


def _progress(total: int, initial: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="tuned lens",
                unit="step", dynamic_ncols=True)
