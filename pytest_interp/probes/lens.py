"""Logit lens and tuned lens, written once against the Backend protocol.

Block ``l``'s resid_post is decoded through the final norm and the unembedding (logit lens),
or first through the tuned lens's affine translator ``h + A h + b`` (tuned lens).

Tuned lenses use tuned-lens's folder layout: ``config.json`` (TunedLensConfig: d_model,
num_hidden_layers, bias, ...) and ``params.pt`` (the state dict of ``layer_translators``, a
ModuleList of ``num_hidden_layers`` Linear(d_model, d_model): keys ``"{i}.weight"``,
``"{i}.bias"``). Translator ``i`` reads ``hidden_states[i]``, the input of block ``i``, so
block ``l``'s output uses translator ``l + 1``; the last block's output needs none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from ..backends.base import Site, all_sites
from ..errors import InterpError
from ..results import LensResult

if TYPE_CHECKING:
    from ..model import InterpModel

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"


@dataclass
class TunedLens:
    """Affine translators per layer, in tuned-lens's format.

    ``weight[i]`` [D, D] and ``bias[i]`` [D] map ``hidden_states[i]`` (block i's input) to
    ``h + h @ weight[i].T + bias[i]``.
    """

    config: dict
    weight: Tensor  # [n_layers, D, D]
    bias: Tensor  # [n_layers, D]
    path: str = ""

    @staticmethod
    def identity(
        d_model: int, n_layers: int, *, base_model: str = "", revision: str | None = None
    ) -> TunedLens:
        config = {
            "base_model_name_or_path": base_model, "d_model": d_model,
            "num_hidden_layers": n_layers, "bias": True, "base_model_revision": revision,
            "unembed_hash": None, "lens_type": "linear_tuned_lens",
        }
        return TunedLens(config, torch.zeros(n_layers, d_model, d_model),
                         torch.zeros(n_layers, d_model))

    @staticmethod
    def load(path: str | Path) -> TunedLens:
        """Read a tuned-lens folder (config.json + params.pt)."""
        folder = Path(path)
        config_file, params_file = folder / CONFIG_FILE, folder / PARAMS_FILE
        if not config_file.is_file() or not params_file.is_file():
            raise InterpError(
                f"tuned lens {str(path)!r} needs {CONFIG_FILE} and {PARAMS_FILE} in one folder: "
                "train one with `python -m pytest_interp.lens train --model SPEC --text FILE "
                "--out DIR`"
            )
        try:
            config = json.loads(config_file.read_text())
            state = torch.load(params_file, map_location="cpu", weights_only=True)
            n, d = int(config["num_hidden_layers"]), int(config["d_model"])
            weight = torch.stack([state[f"{i}.weight"] for i in range(n)]).float()
            bias = torch.stack([
                state[f"{i}.bias"] if config.get("bias", True) else torch.zeros(d)
                for i in range(n)
            ]).float()
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise InterpError(
                f"tuned lens {str(path)!r} is unreadable ({type(exc).__name__}: {exc}): "
                "re-save it with tuned-lens or `python -m pytest_interp.lens train`"
            ) from None
        if weight.shape != (n, d, d) or bias.shape != (n, d):
            raise InterpError(
                f"tuned lens {str(path)!r}: params.pt does not match its config "
                f"({n} layers, d_model {d}): re-save it"
            )
        return TunedLens(config, weight, bias, str(path))

    def save(self, path: str | Path) -> None:
        """Write tuned-lens's layout: config.json and params.pt (a ModuleList state dict)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for i in range(self.weight.shape[0]):
            state[f"{i}.weight"] = self.weight[i].detach().clone().contiguous()
            state[f"{i}.bias"] = self.bias[i].detach().clone().contiguous()
        torch.save(state, folder / PARAMS_FILE)
        (folder / CONFIG_FILE).write_text(json.dumps(self.config, indent=2))

    def check_fits(self, model: InterpModel) -> None:
        info = model.info
        n, d = int(self.config["num_hidden_layers"]), int(self.config["d_model"])
        if (n, d) != (info.n_layers, info.d_model):
            raise InterpError(
                f"tuned lens {self.path!r} was trained for a model with {n} layers and d_model "
                f"{d}, but {info.name} has {info.n_layers} and {info.d_model}: train one for it "
                f"with `python -m pytest_interp.lens train --model {info.name} --text FILE "
                "--out DIR`"
            )

    def translate(self, hidden: Tensor, index: int) -> Tensor:
        """``h + A h + b`` for translator ``index`` (hidden_states[index]); [..., D]."""
        weight = self.weight[index].to(hidden)
        return hidden + hidden @ weight.T + self.bias[index].to(hidden)


def _positions(n_tokens: int, positions: int | Sequence[int] | None) -> tuple[int, ...]:
    if positions is None:
        return tuple(range(n_tokens))
    items = [positions] if isinstance(positions, int) else list(positions)
    out = []
    for pos in items:
        if isinstance(pos, bool) or not isinstance(pos, int) or not -n_tokens <= pos < n_tokens:
            raise InterpError(
                f"position {pos!r} is outside the {n_tokens}-token prompt: use 0..{n_tokens - 1} "
                f"or -{n_tokens}..-1"
            )
        out.append(pos % n_tokens)
    return tuple(out)


@torch.inference_mode()
def run_lens(
    model: InterpModel, prompt: str, *, positions: int | Sequence[int] | None = -1,
    lens: TunedLens | None = None,
) -> LensResult:
    """Decode every block's resid_post at ``positions`` (None = all) through the lens."""
    tokens = model.tokens(prompt)
    if tokens.batch != 1:
        raise InterpError("a lens reads one prompt at a time; call it once per prompt")
    if lens is not None:
        lens.check_fits(model)
    n_layers = model.info.n_layers
    pos = _positions(tokens.length, positions)
    run = model.run(tokens, read=all_sites(n_layers, ("resid_post",)))
    index = torch.tensor(pos, dtype=torch.long)
    hidden = torch.stack([run.acts[Site(layer, "resid_post")][0, index]
                          for layer in range(n_layers)])  # [L, P, D]
    if lens is not None:
        hidden = torch.stack([
            lens.translate(hidden[layer], layer + 1) if layer + 1 < n_layers else hidden[layer]
            for layer in range(n_layers)
        ])
    logits = model.backend.unembed(hidden).float().cpu().numpy()
    final = run.logits[0, index].float().cpu().numpy()
    return LensResult(
        model=model.info.name, lens="logit" if lens is None else lens.path, prompt=prompt,
        str_tokens=tokens.strs[0], positions=pos, logits=logits, final_logits=final,
        vocab=model.vocab,
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


def _chunks(model: InterpModel, texts: Iterable[str], seq_len: int) -> list[tuple[int, ...]]:
    ids: list[int] = []
    for text in texts:
        ids.extend(model.backend.encode(text))
    chunks = [tuple(ids[i:i + seq_len]) for i in range(0, len(ids) - seq_len + 1, seq_len)]
    if not chunks:
        raise InterpError(
            f"the training text has {len(ids)} tokens, fewer than one {seq_len}-token sequence: "
            "pass more text or a smaller --seq-len"
        )
    return chunks


def train_tuned_lens(
    model: InterpModel, texts: Iterable[str], out: str | Path, config: TrainConfig = TrainConfig(),
    *, resume: bool = True, progress: bool = True,
) -> TunedLens:
    """Fit translators by SGD (Nesterov) on KL(final || lens); save to ``out``, resumably.

    A checkpoint (``out/checkpoint.pt``) is written every ``checkpoint_every`` steps and on
    interruption; a later call with ``resume=True`` continues from it.
    """
    from ..backends.base import Tokens

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
                run = model.backend.run(tokens, read=reads)
            target = torch.log_softmax(run.logits.float(), -1).clone()  # leave inference mode
            loss = torch.zeros(())
            for j, i in enumerate(layers):
                hidden = run.acts[Site(i, "resid_pre")].float().clone()
                translated = hidden + hidden @ weight[j].T + bias[j]
                logp = torch.log_softmax(model.backend.unembed(translated).float(), -1)
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


def _progress(total: int, initial: int, enabled: bool):  # noqa: ANN202 - tqdm type
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="tuned lens",
                unit="step", dynamic_ncols=True)
