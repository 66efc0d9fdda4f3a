"""probes layer: a sparse dictionary, an SAE or a transcoder, as one object: ``encode`` and
``decode`` in the formats' own formulas, its sites, its size.

Shapes: x [..., d_in] at ``site``; latents [..., n_latents]; x_hat [..., d_out] at
``out_site`` (the same site and width for an SAE). Weights are kept in float32 in the
orientation ``x @ W_enc`` [d_in, n], ``latents @ W_dec`` [n, d_out], ``x @ W_skip``
[d_in, d_out].

Activations (the formats agree where they overlap):
- ``relu``: relu(pre);
- ``topk``: the k largest pre-activations per row, then ReLU (SAELens; sparsify's ReLU
  first gives the same latents);
- ``groupmax``: the largest ReLU'd pre-activation of each of k equal groups (sparsify);
- ``jumprelu``: relu(pre) * (pre > threshold), strictly greater (Gemma Scope, SAELens);
- ``gated``: (x W_enc + b_gate > 0) * relu(x (W_enc * exp(r_mag)) + b_mag) (SAELens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, get_args

import torch
from torch import Tensor

from ..errors import InterpError
from ..sites import Site

if TYPE_CHECKING:
    from ..backends.base import ModelInfo

ActivationName = Literal["relu", "topk", "groupmax", "jumprelu", "gated"]
Normalization = Literal["none", "constant_norm_rescale", "layer_norm"]
NORMALIZATIONS: tuple[Normalization, ...] = get_args(Normalization)
NEEDS = {"relu": ("b_enc",), "topk": ("b_enc",), "groupmax": ("b_enc",),
         "jumprelu": ("b_enc", "threshold"), "gated": ("b_gate", "r_mag", "b_mag")}


@dataclass(frozen=True, eq=False)
class Dictionary:
    """A sparse dictionary read from ``name`` (a path or a hub path), in ``format``.

    ``center``: the input has ``b_dec`` subtracted before encoding (SAELens's
    ``apply_b_dec_to_input``, sparsify's SAEs). ``normalize``: SAELens's run-time input
    normalisation, undone on decode (SAEs only). ``scale``: a constant the input is multiplied
    by (and the output divided by), SAELens's ``expected_average_only_in`` factor.
    """

    name: str
    format: str
    site: Site
    out_site: Site
    weights: dict[str, Tensor]
    activation: ActivationName = "relu"
    k: int | None = None
    center: bool = False
    normalize: Normalization = "none"
    scale: float = 1.0
    model_name: str | None = None
    unit_norm: bool = False
    """It reads TransformerLens's ``ln2.hook_normalized``: the residual the MLP's norm reads
    (``site``), normalised without the norm's weight and bias, as no module outputs it;
    ``fitted`` binds the model's norm (``norm_eps``, ``norm_centred``)."""
    raw_mlp: bool = False
    """Its output is the MLP module's own (``layers.L.mlp``): ``mlp_out`` only on a model
    with no norm after the MLP."""
    mlp_branch: bool = False
    """It reads the residual the MLP's norm reads (``hook_mlp_in``): ``resid_mid``, or
    ``resid_pre`` in parallel blocks (``fitted`` moves it there)."""
    norm_eps: float | None = None
    norm_centred: bool = False
    labels: dict[int, str] = field(default_factory=dict)
    """Labels of latents: a ``labels.json`` beside the dictionary, or the file a test names."""
    decoder_labels: dict[int, str] = field(default_factory=dict, repr=False)
    """Computed labels (each latent's top tokens through the unembedding), kept once made."""

    def __post_init__(self) -> None:
        w = self.weights
        missing = [k for k in ("W_enc", "W_dec", "b_dec", *NEEDS[self.activation])
                   if k not in w]
        if missing:
            raise InterpError(f"sae {self.name!r} ({self.format}, {self.activation}) has no "
                              f"{', '.join(missing)} tensor: the file is incomplete")
        n = w["W_enc"].shape[1]
        if w["W_dec"].shape[0] != n or w["b_dec"].shape != (w["W_dec"].shape[1],):
            raise InterpError(f"sae {self.name!r}: W_enc is {list(w['W_enc'].shape)}, W_dec "
                              f"{list(w['W_dec'].shape)} and b_dec {list(w['b_dec'].shape)}: "
                              "they do not make one dictionary")
        if self.activation in ("topk", "groupmax") and not (self.k and 0 < self.k <= n):
            raise InterpError(f"sae {self.name!r}: {self.activation} needs k between 1 and "
                              f"{n}, got {self.k!r}")

    # -- size and sites --------------------------------------------------------------------

    @property
    def d_in(self) -> int:
        return int(self.weights["W_enc"].shape[0])

    @property
    def d_out(self) -> int:
        return int(self.weights["W_dec"].shape[1])

    @property
    def n_latents(self) -> int:
        return int(self.weights["W_enc"].shape[1])

    @property
    def transcoder(self) -> bool:
        """Reads one site and writes another (an MLP's input -> its output)."""
        return self.site != self.out_site

    def __str__(self) -> str:
        kind = "transcoder" if self.transcoder else "SAE"
        where = f"{self.site} -> {self.out_site}" if self.transcoder else str(self.site)
        k = f" k={self.k}" if self.k else ""
        return f"{kind} {self.name!r} ({self.activation}{k}, {self.n_latents} latents at {where})"

    def fitted(self, info: ModelInfo) -> Dictionary:
        """This dictionary on ``info``'s model: its norm bound where it reads
        ``ln2.hook_normalized``, or one line naming the dictionary, the model and what
        differs, before any pass."""
        found = self
        if self.mlp_branch and info.parallel:  # an SAE reads and writes there
            pre = Site(self.site.layer, "resid_pre")
            found = replace(found, site=pre,
                            out_site=pre if self.out_site == self.site else self.out_site)
        if self.unit_norm and self.norm_eps is None and info.mlp_norm_eps is not None:
            found = replace(found, norm_eps=info.mlp_norm_eps,
                            norm_centred=info.mlp_norm_centred)
        problems = []
        for site in dict.fromkeys((found.site, found.out_site)):
            if not 0 <= site.layer < info.n_layers:
                problems.append(f"its site {site} is beyond the model's {info.n_layers} layers")
            elif site.component not in info.components:
                problems.append(f"the model has no {site.component} (parallel blocks)")
        for name, width in (("d_in", self.d_in), ("d_out", self.d_out)):
            if width != info.d_model:
                problems.append(f"its {name} is {width}, the model's d_model {info.d_model}")
        if self.unit_norm and info.mlp_norm_eps is None:
            problems.append("it reads ln2.hook_normalized, and the model has no norm before "
                            "its MLP")
        if self.raw_mlp and info.post_norm:
            problems.append("it reads the MLP module's own output, and the model normalises "
                            "that before adding it, where pytest-interp's mlp_out is: use a "
                            "dictionary of post_feedforward_layernorm.output (TransformerLens's "
                            "blocks.L.hook_mlp_out)")
        if problems:
            raise InterpError(f"{self} does not fit {info.name}: {'; '.join(problems)}")
        return found

    # -- the formulas ----------------------------------------------------------------------

    def _input(self, x: Tensor) -> Tensor:
        """``x`` as the dictionary reads it: for ``unit_norm``, the model's MLP norm without
        its weight and bias, in float32 as TransformerLens computes it."""
        if not self.unit_norm:
            return x.float()
        if self.norm_eps is None:
            raise InterpError(f"{self} reads ln2.hook_normalized: bind a model's norm first "
                              "(Dictionary.fitted(info))")
        x = x.float()
        if self.norm_centred:
            x = x - x.mean(-1, keepdim=True)
        return x / (x.pow(2).mean(-1, keepdim=True) + self.norm_eps).sqrt()

    def _normalized(self, x: Tensor) -> Tensor:
        x = self._input(x)
        x = x * self.scale if self.scale != 1.0 else x
        if self.normalize == "constant_norm_rescale":
            return x * (math.sqrt(self.d_in) / x.norm(dim=-1, keepdim=True))
        if self.normalize == "layer_norm":
            centred = x - x.mean(-1, keepdim=True)
            return centred / (centred.std(-1, keepdim=True) + 1e-5)
        return x

    def encode(self, x: Tensor) -> Tensor:
        """The latents of ``x`` [..., d_in] -> [..., n_latents], float32."""
        w = self.weights
        h = self._normalized(x)
        if self.center:
            h = h - w["b_dec"]
        if self.activation == "gated":
            gate = (h @ w["W_enc"] + w["b_gate"]) > 0
            return gate * torch.relu(h @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
        pre = h @ w["W_enc"] + w["b_enc"]
        if self.activation == "topk":
            assert self.k is not None
            values, index = pre.topk(self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, index, torch.relu(values))
        if self.activation == "groupmax":
            assert self.k is not None
            values, index = torch.relu(pre).unflatten(-1, (self.k, -1)).max(-1)
            offsets = torch.arange(0, self.n_latents, self.n_latents // self.k,
                                   device=pre.device)
            return torch.zeros_like(pre).scatter(-1, index + offsets, values)
        if self.activation == "jumprelu":
            return torch.relu(pre) * (pre > w["threshold"])
        return torch.relu(pre)

    def decode(self, latents: Tensor, x: Tensor | None = None) -> Tensor:
        """The reconstruction [..., d_out] of ``latents``; ``x`` (the input that was encoded)
        is needed where the output depends on it: a skip connection, a per-token input
        normalisation undone."""
        w = self.weights
        y = latents.float() @ w["W_dec"] + w["b_dec"]
        needs = "W_skip" in w or self.normalize != "none"
        if needs and x is None:
            raise InterpError(f"decoding {self} needs the input it encoded: pass x=")
        if not self.transcoder and self.normalize != "none":
            assert x is not None
            raw = x.float() * self.scale
            if self.normalize == "constant_norm_rescale":
                y = y / (math.sqrt(self.d_in) / raw.norm(dim=-1, keepdim=True))
            else:
                centred = raw - raw.mean(-1, keepdim=True)
                y = y * centred.std(-1, keepdim=True) + raw.mean(-1, keepdim=True)
        if self.scale != 1.0:
            y = y / self.scale
        if "W_skip" in w:
            assert x is not None
            y = y + self._input(x) @ w["W_skip"]
        return y

    def direction(self, latent: int) -> Tensor:
        """The decoder direction of one latent [d_out], in the model's own units (a steering
        vector: adding a * direction is the latent firing with activation a)."""
        self.check_latent(latent)
        return self.weights["W_dec"][latent] / self.scale

    def check_latent(self, latent: object) -> int:
        if not isinstance(latent, int) or isinstance(latent, bool) \
                or not 0 <= latent < self.n_latents:
            raise InterpError(f"latent {latent!r} is not one of {self}'s: use 0.."
                              f"{self.n_latents - 1}")
        return latent

    def to(self, device: torch.device | str) -> Dictionary:
        """This dictionary with its weights on ``device`` (itself when already there)."""
        first = self.weights["W_enc"]
        if first.device == torch.device(device):
            return self
        return replace(self, weights={k: v.to(device) for k, v in self.weights.items()})
