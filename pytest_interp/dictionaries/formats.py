"""probes layer: reading sparse dictionaries: SAELens directories (``cfg.json`` +
``sae_weights.safetensors``, 6.x and older cfg layouts), Gemma Scope 1 and 2 folders
(``params.npz`` / ``params.safetensors``, with or without ``config.json``) and sparsify
hookpoint folders (``cfg.json`` + ``sae.safetensors``), from a local path or a hub path
``org/repo/folder/...@revision`` through Hugging Face's own cache and settings.

Each format's semantics follow its own source: SAELens's ``process_sae_in`` and activation
classes, Gemma Scope's tutorial ``JumpReLUSAE``, sparsify's ``SparseCoder.encode``.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..errors import InterpError
from ..sites import Component, Site
from .dictionary import NORMALIZATIONS, ActivationName, Dictionary

SAELENS_ARCHITECTURES: dict[str, tuple[ActivationName, bool]] = {  # -> (activation, transcoder)
    "standard": ("relu", False), "topk": ("topk", False), "jumprelu": ("jumprelu", False),
    "gated": ("gated", False), "transcoder": ("relu", True), "skip_transcoder": ("relu", True),
    "jumprelu_transcoder": ("jumprelu", True), "jumprelu_skip_transcoder": ("jumprelu", True),
}
# TransformerLens hook names (blocks.L.<point>) and Hugging Face module paths
# (model.layers.L.<point>, sparsify's layers.L.<point>) -> our components. TransformerLens's
# hook_mlp_in fires on resid_mid, before the norm (mlp.hook_in is after it); its
# ln2.hook_normalized is that norm without its weight (UNIT_NORM); hook_mlp_out is after a
# post-MLP norm where there is one, mlp.hook_out and HF's mlp before it (RAW_MLP).
TL_POINTS: dict[str, Component] = {
    "hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post", "hook_attn_out": "attn_out", "hook_mlp_out": "mlp_out",
    "hook_mlp_in": "resid_mid", "ln2.hook_normalized": "resid_mid", "mlp.hook_in": "mlp_in",
    "mlp.hook_out": "mlp_out",
}
HF_POINTS: dict[str, Component] = {
    "": "resid_post", "output": "resid_post", "mlp": "mlp_out", "mlp.output": "mlp_out",
    "mlp.input": "mlp_in", "pre_feedforward_layernorm.output": "mlp_in",
    "post_feedforward_layernorm.output": "mlp_out",
}
UNIT_NORM = ("ln2.hook_normalized",)
MLP_BRANCH = ("hook_mlp_in", "ln2.hook_normalized")  # the residual the MLP's norm reads
RAW_MLP = ("mlp.hook_out", "mlp", "mlp.output")
GEMMA_SCOPE_GROUPS: dict[str, tuple[Component, Component]] = {
    "resid_post": ("resid_post", "resid_post"), "res": ("resid_post", "resid_post"),
    "mlp_out": ("mlp_out", "mlp_out"), "mlp": ("mlp_out", "mlp_out"),
    "transcoder": ("mlp_in", "mlp_out"), "transcoders": ("mlp_in", "mlp_out"),
}


class Hook(NamedTuple):
    """Where a hook name reads, as our site, and how (``Dictionary.unit_norm``,
    ``Dictionary.raw_mlp``, ``Dictionary.mlp_branch``)."""

    site: Site
    unit_norm: bool = False
    raw_mlp: bool = False
    mlp_branch: bool = False


def hook_of(hook: str, name: str) -> Hook:
    """What a hook name or module path reads, or one line naming the ones we read."""
    for pattern, points in ((r"blocks\.(\d+)\.(.+)", TL_POINTS),
                            (r"(?:model\.)?(?:layers|h)\.(\d+)\.?(.*)", HF_POINTS)):
        found = re.fullmatch(pattern, hook)
        if found and found.group(2) in points:
            point = found.group(2)
            return Hook(Site(int(found.group(1)), points[point]), point in UNIT_NORM,
                        point in RAW_MLP, point in MLP_BRANCH)
    known = ", ".join(f"blocks.L.{p}" for p in TL_POINTS)
    raise InterpError(f"sae {name!r} reads {hook!r}, a hook we do not read: pytest-interp reads "
                      f"{known} (and the Hugging Face paths layers.L, layers.L.mlp)")


def placed(hook_in: Hook, hook_out: Hook, name: str) -> dict[str, Any]:
    """The ``Dictionary`` fields of where it reads and writes, or one line where no run
    could take its output back."""
    if hook_out.unit_norm:
        raise InterpError(f"sae {name!r} writes ln2.hook_normalized, the norm before the MLP "
                          "without its weight, which no module outputs: pytest-interp cannot "
                          "splice its reconstruction in (it reads transcoders from there to "
                          "the MLP's output)")
    if hook_out.mlp_branch:
        raise InterpError(f"sae {name!r} writes hook_mlp_in, the MLP's own copy of the "
                          "residual stream, where pytest-interp splices no reconstruction (it "
                          "reads transcoders from there to the MLP's output); an SAE of that "
                          "residual, spliced into it, is one of hook_resid_mid")
    return {"site": hook_in.site, "out_site": hook_out.site, "unit_norm": hook_in.unit_norm,
            "raw_mlp": hook_out.raw_mlp, "mlp_branch": hook_in.mlp_branch}


# ---------------------------------------------------------------------------------------
# SAELens


def read_saelens(folder: Path, name: str) -> Dictionary:
    """A SAELens directory: the architecture, hook and normalisation from cfg.json (6.x keeps
    the hook in ``metadata``; 5.x and older flat, as ``hook_name`` or ``hook_point``)."""
    cfg = _json(folder / "cfg.json", name)
    meta = {**cfg, **(cfg.get("metadata") or {})}
    arch = cfg.get("architecture", "standard")
    if meta.get("activation_fn_str", meta.get("activation_fn")) == "topk":
        arch, cfg["k"] = "topk", (meta.get("activation_fn_kwargs") or {}).get("k")
    if arch not in SAELENS_ARCHITECTURES:
        raise InterpError(f"sae {name!r} has architecture {arch!r}: pytest-interp reads "
                          f"{', '.join(SAELENS_ARCHITECTURES)} (a training checkpoint such as "
                          "batchtopk is saved for inference as jumprelu)")
    activation, transcoder = SAELENS_ARCHITECTURES[arch]
    hook = meta.get("hook_name") or meta.get("hook_point")
    if not isinstance(hook, str):
        raise InterpError(f"sae {name!r}: cfg.json names no hook_name: add the site it reads, "
                          "e.g. \"hook_name\": \"blocks.12.hook_resid_post\"")
    hook_in = hook_of(hook, name)
    out = meta.get("hook_name_out")
    hook_out = hook_of(out, name) if isinstance(out, str) else \
        Hook(Site(hook_in.site.layer, "mlp_out")) if transcoder else hook_in
    weights = _tensors(folder / "sae_weights.safetensors", name)
    if "W_skip" in weights:  # SAELens: x @ W_skip.T, W_skip [d_out, d_in]
        weights["W_skip"] = weights["W_skip"].T.contiguous()
    scaling = weights.pop("finetuning_scaling_factor", weights.pop("scaling_factor", None))
    if scaling is not None:  # 5.x: (latents * s) @ W_dec, folded into the decoder
        weights["W_dec"] = weights["W_dec"] * scaling[:, None]
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        norms = weights["W_dec"].norm(dim=-1)  # topk(pre * n) then / n on decode: folded
        weights.update(W_enc=weights["W_enc"] * norms, b_enc=weights["b_enc"] * norms,
                       W_dec=weights["W_dec"] / norms[:, None])
    normalize = meta.get("normalize_activations") or "none"
    if normalize is True or normalize == "expected_average_only_in":
        normalize = "none"  # identity at run time: the factor is folded in at the end
    if normalize not in NORMALIZATIONS:
        raise InterpError(f"sae {name!r}: normalize_activations={normalize!r} is not one "
                          "SAELens defines")
    center = bool(cfg.get("apply_b_dec_to_input", True)) and not transcoder
    return Dictionary(name, "saelens", weights=weights, activation=activation,
                      k=cfg.get("k"), center=center, normalize=normalize,
                      model_name=meta.get("model_name"), **placed(hook_in, hook_out, name))


# ---------------------------------------------------------------------------------------
# Gemma Scope


def read_gemma_scope(params: Path, name: str) -> Dictionary:
    """A Gemma Scope folder's ``params.safetensors`` (Gemma Scope 2) or ``params.npz``: a
    JumpReLU with no input centring; the site from ``config.json``'s hook points, else from
    the path (``resid_post/layer_12_width_16k_l0_small``, ``gemma-scope-2b-pt-res/layer_5``)."""
    if params.suffix == ".npz":
        import numpy as np

        with np.load(params) as found:
            raw = {k: torch.from_numpy(found[k]) for k in found.files}
    else:
        raw = _tensors(params, name)
    weights = {_gemma_key(k): v.float() for k, v in raw.items()}
    config = params.parent / "config.json"
    hooks = _gemma_hooks(params, _json(config, name) if config.is_file() else {}, name)
    return Dictionary(name, "gemma-scope", weights=weights, activation="jumprelu",
                      **placed(*hooks, name))


def _gemma_key(key: str) -> str:
    lower = key.lower()
    if lower == "affine_skip_connection":
        return "W_skip"  # x @ A, as Gemma Scope's tutorial computes it
    return {"w_enc": "W_enc", "w_dec": "W_dec", "w_skip": "W_skip"}.get(lower, lower)


def _gemma_hooks(params: Path, config: dict[str, Any], name: str) -> tuple[Hook, Hook]:
    point_in = config.get("hf_hook_point_in")
    if isinstance(point_in, str):
        hook_in = hook_of(point_in, name)
        point_out = config.get("hf_hook_point_out")
        return hook_in, hook_of(point_out, name) if isinstance(point_out, str) else hook_in
    layer = next((int(m.group(1)) for part in reversed(params.parts)
                  if (m := re.match(r"layer_(\d+)", part))), None)
    group = next((g for part in reversed(params.parts) for g in GEMMA_SCOPE_GROUPS
                  if part == g or part.endswith(f"-{g}")), None)
    if layer is None or group is None:
        raise InterpError(f"sae {name!r}: cannot tell which site {params.name} reads: keep "
                          "Gemma Scope's folder names (resid_post/layer_12_...) or its "
                          "config.json with hf_hook_point_in")
    comp_in, comp_out = GEMMA_SCOPE_GROUPS[group]
    return Hook(Site(layer, comp_in)), Hook(Site(layer, comp_out))


# ---------------------------------------------------------------------------------------
# sparsify


def read_sparsify(folder: Path, name: str) -> Dictionary:
    """A sparsify hookpoint folder (``layers.6``, ``layers.6.mlp``): SparseCoder's encode
    (b_dec subtracted for SAEs, not transcoders; ReLU, then top-k or group max)."""
    cfg = _json(folder / "cfg.json", name)
    raw = _tensors(folder / "sae.safetensors", name)
    transcode = bool(cfg.get("transcode", False))
    weights = {"W_enc": raw["encoder.weight"].T.contiguous(), "b_enc": raw["encoder.bias"],
               "W_dec": raw["W_dec"], "b_dec": raw["b_dec"]}
    if "W_skip" in raw:  # x @ W_skip.T
        weights["W_skip"] = raw["W_skip"].T.contiguous()
    hook = folder.name if not re.fullmatch(r"seed\d+", folder.name) else folder.parent.name
    hook_out = hook_of(hook, name)  # the module's output; its input, for a transcoder
    hook_in = hook_out
    if transcode and hook_out.site.component == "mlp_out":
        hook_in = Hook(Site(hook_out.site.layer, "mlp_in"))
    activation = cfg.get("activation", "topk")
    if activation not in ("topk", "groupmax"):
        raise InterpError(f"sae {name!r}: sparsify activation {activation!r} is not topk or "
                          "groupmax")
    return Dictionary(name, "sparsify", weights=weights, activation=activation,
                      k=cfg.get("k"), center=not transcode, **placed(hook_in, hook_out, name))


# ---------------------------------------------------------------------------------------
# Specs: a local path or a hub path


def read_dictionary(path: Path, name: str) -> Dictionary:
    """The dictionary in a local folder or file, by the files it holds, with the latent
    labels of a ``labels.json`` beside it."""
    found = _read(path, name)
    labels = (path if path.is_dir() else path.parent) / "labels.json"
    return replace(found, labels=read_labels(labels, name)) if labels.is_file() else found


def read_labels(path: Path, name: str) -> dict[int, str]:
    """A labels file: a JSON object ``{"4512": "capital cities", ...}``."""
    found = _json(path, name)
    bad = next((k for k, v in found.items()
                if not k.isdigit() or not isinstance(v, str)), None)
    if bad is not None:
        raise InterpError(f"sae {name!r}: {path} maps {bad!r} to {found[bad]!r}: a labels file "
                          'maps latent numbers to descriptions, {"4512": "capital cities"}')
    return {int(k): v for k, v in found.items()}


def _read(path: Path, name: str) -> Dictionary:
    if path.is_file():
        if path.name.startswith("params."):
            return read_gemma_scope(path, name)
        path = path.parent
    if (path / "sae_weights.safetensors").is_file():
        return read_saelens(path, name)
    if (path / "sae.safetensors").is_file():
        return read_sparsify(path, name)
    for params in ("params.safetensors", "params.npz"):
        if (path / params).is_file():
            return read_gemma_scope(path / params, name)
    raise InterpError(f"sae {name!r}: {path} holds no dictionary: expected SAELens's "
                      "cfg.json + sae_weights.safetensors, Gemma Scope's params.safetensors "
                      "or params.npz, or sparsify's cfg.json + sae.safetensors")


def load_dictionary(spec: str, root: Path | None = None) -> Dictionary:
    """The dictionary ``spec`` names: a local folder or file (relative to ``root``, else to
    the working directory), or a hub path ``org/repo[/folder...][@revision]`` fetched through
    the Hugging Face cache. Its name is ``spec`` as given, so results read the same on any
    machine."""
    name = spec
    local = Path(spec).expanduser()
    for where in ([root / local] if root is not None and not local.is_absolute() else []) + [
            local]:
        if where.exists():
            return read_dictionary(where, name)
    repo, _, revision = spec.partition("@")
    parts = repo.split("/")
    if len(parts) < 2 or not all(parts) or Path(spec).is_absolute() or spec.startswith("."):
        raise InterpError(f"sae {spec!r} is neither a file nor a folder here, nor a hub path "
                          "org/repo/folder@revision")
    return read_dictionary(_hub_folder("/".join(parts[:2]), "/".join(parts[2:]),
                                       revision or None, spec), name)


def _hub_folder(repo: str, folder: str, revision: str | None, spec: str) -> Path:
    """``folder`` of ``repo`` at ``revision`` in the Hugging Face cache (fetched when
    missing, unless HF_HUB_OFFLINE is set): only that folder's files."""
    from huggingface_hub import snapshot_download

    from ..backends.hub import hub_offline

    pattern = f"{folder}/*" if folder else "*"
    try:
        root = Path(snapshot_download(repo, revision=revision, allow_patterns=[pattern]))
    except Exception as exc:  # offline and not cached, network, auth, unknown: one line
        why = ("is not in the Hugging Face cache and HF_HUB_OFFLINE is set" if hub_offline()
               else f"could not be fetched ({type(exc).__name__})")
        at = f" --revision {revision}" if revision else ""
        include = f" --include '{folder}/*'" if folder else ""
        raise InterpError(f"sae {spec!r} {why}: fetch it once with `hf download {repo}"
                          f"{include}{at}` (or check the path, the revision and HF_TOKEN)"
                          ) from None
    found = root / folder
    if not found.exists():
        raise InterpError(f"sae {spec!r}: {repo} has no folder {folder!r} at revision "
                          f"{revision or 'main'}")
    return found


def _json(path: Path, name: str) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InterpError(f"sae {name!r}: cannot read {path} ({exc})") from None
    if not isinstance(found, dict):
        raise InterpError(f"sae {name!r}: {path} is not a JSON object")
    return found


def _tensors(path: Path, name: str) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(path).items()}
    except (OSError, ValueError, RuntimeError) as exc:
        raise InterpError(f"sae {name!r}: cannot read {path} ({exc})") from None
