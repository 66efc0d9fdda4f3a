"""results layer: lenses: how a block's residual stream is read out as next-token logits
(tuned-lens's model).

A lens maps block ``layer``'s output (its resid_post) to a vector that the model's own final
norm and unembedding decode. ``LogitLens`` passes it through (nostalgebraist 2020);
``TunedLens`` first applies a learned affine translator (Belrose et al. 2023). Both share the
``Lens`` protocol, as tuned-lens's ``LogitLens``/``TunedLens`` share ``Lens``.

Tuned lenses use tuned-lens's folder layout: ``config.json`` (TunedLensConfig: d_model,
num_hidden_layers, bias, ...) and ``params.pt`` (the state dict of ``layer_translators``, a
ModuleList of ``num_hidden_layers`` Linear(d_model, d_model): keys ``"{i}.weight"``,
``"{i}.bias"``). Translator ``i`` reads ``hidden_states[i]``, the input of block ``i``, so
block ``l``'s output uses translator ``l + 1``; the last block's output needs none.

torch is imported inside the methods that need it: markers name lenses at collection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import InterpError
from .files import LENS_CONFIG_FILE, LENS_PARAMS_FILE, check_lens_folder

if TYPE_CHECKING:
    from torch import Tensor

    from .backends.base import ModelInfo

LOGIT = "logit"


class Lens(Protocol):
    """Reads block outputs for the final norm and unembedding."""

    @property
    def name(self) -> str:
        """What results and snapshots call the lens: "logit", or the tuned lens's folder."""
        ...

    def check_fits(self, info: ModelInfo) -> None:
        """Raise InterpError if the lens was made for another shape of model."""
        ...

    def transform_hidden(self, hidden: Tensor, layer: int) -> Tensor:
        """Block ``layer``'s resid_post [..., D] -> the vector to decode [..., D]."""
        ...


@dataclass(frozen=True)
class LogitLens:
    """The identity: each block's output decoded as if it were the last block's."""

    name: str = LOGIT

    def check_fits(self, info: ModelInfo) -> None:
        pass

    def transform_hidden(self, hidden: Tensor, layer: int) -> Tensor:
        return hidden


LOGIT_LENS = LogitLens()


def named_lens(value: Lens | str | Path) -> Lens | str:
    """A lens as markers and probes name it: ``"logit"`` is the logit lens; any other string
    or path names a tuned-lens folder (kept as a string until a model loads it)."""
    if isinstance(value, Path):
        return str(value)
    if value == LOGIT:
        return LOGIT_LENS
    return value


def loaded_lens(value: Lens | str | Path, cache: dict[str, TunedLens]) -> Lens:
    """The lens ``value`` names (see ``named_lens``), a tuned-lens folder read once into
    ``cache``."""
    chosen = named_lens(value)
    if isinstance(chosen, str):
        if chosen not in cache:
            cache[chosen] = TunedLens.load(chosen)
        return cache[chosen]
    return chosen


@dataclass
class TunedLens:
    """Affine translators per layer, in tuned-lens's format.

    ``weight[i]`` [D, D] and ``bias[i]`` [D] map ``hidden_states[i]`` (block i's input) to
    ``h + h @ weight[i].T + bias[i]``.
    """

    config: dict[str, Any]
    weight: Tensor  # [n_layers, D, D]
    bias: Tensor  # [n_layers, D]
    path: str = ""

    @property
    def name(self) -> str:
        return self.path

    @staticmethod
    def identity(
        d_model: int, n_layers: int, *, base_model: str = "", revision: str | None = None
    ) -> TunedLens:
        import torch

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
        import torch

        folder = check_lens_folder(path)
        try:
            config = json.loads((folder / LENS_CONFIG_FILE).read_text())
            state = torch.load(folder / LENS_PARAMS_FILE, map_location="cpu", weights_only=True)
            n, d = int(config["num_hidden_layers"]), int(config["d_model"])
            weight = torch.stack([state[f"{i}.weight"] for i in range(n)]).float()
            bias = torch.stack([
                state[f"{i}.bias"] if config.get("bias", True) else torch.zeros(d)
                for i in range(n)
            ]).float()
        except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
            raise InterpError(
                f"tuned lens {str(path)!r} is unreadable ({type(exc).__name__}: {exc}): "
                "re-save it with tuned-lens or `pytest-interp lens train`"
            ) from None
        if weight.shape != (n, d, d) or bias.shape != (n, d):
            raise InterpError(
                f"tuned lens {str(path)!r}: params.pt does not match its config "
                f"({n} layers, d_model {d}): re-save it"
            )
        return TunedLens(config, weight, bias, str(path))

    def save(self, path: str | Path) -> None:
        """Write tuned-lens's layout: config.json and params.pt (a ModuleList state dict)."""
        import torch

        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state = {}
        for i in range(self.weight.shape[0]):
            state[f"{i}.weight"] = self.weight[i].detach().clone().contiguous()
            state[f"{i}.bias"] = self.bias[i].detach().clone().contiguous()
        torch.save(state, folder / LENS_PARAMS_FILE)
        (folder / LENS_CONFIG_FILE).write_text(json.dumps(self.config, indent=2))

    def check_fits(self, info: ModelInfo) -> None:
        n, d = int(self.config["num_hidden_layers"]), int(self.config["d_model"])
        if (n, d) != (info.n_layers, info.d_model):
            raise InterpError(
                f"tuned lens {self.path!r} was trained for a model with {n} layers and d_model "
                f"{d}, but {info.name} has {info.n_layers} and {info.d_model}: train one for it "
                f"with `pytest-interp lens train --model {info.name} --text FILE "
                "--out DIR`"
            )

    def translate(self, hidden: Tensor, index: int) -> Tensor:
        """``h + A h + b`` for translator ``index`` (hidden_states[index]); [..., D]."""
        weight = self.weight[index].to(hidden)
        return hidden + hidden @ weight.T + self.bias[index].to(hidden)

    def transform_hidden(self, hidden: Tensor, layer: int) -> Tensor:
        """Block ``layer``'s output is hidden_states[layer + 1]: translator ``layer + 1``."""
        if layer + 1 >= self.weight.shape[0]:
            return hidden  # the last block's output is what the model itself decodes
        return self.translate(hidden, layer + 1)
