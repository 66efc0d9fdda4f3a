"""Sparse dictionaries: every architecture's encode/decode equals its format's own formulas
(written here in numpy from SAELens's, Gemma Scope's and sparsify's source, in float64) within
1e-6 of the largest value (float32 rounding), sparsify folders encode as ``SparseCoder`` does
(the same latents, values within float rounding), hub paths load offline from a hub-layout
cache, and a dictionary that does not fit the model is refused before any forward pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pytest_interp.dictionaries.formats import load_dictionary
from pytest_interp.errors import InterpError

D, N = 16, 48  # d_in, latents
X = np.random.default_rng(0).normal(size=(5, D)).astype(np.float32) * 3


def _random(seed: int, names: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.normal(size=shape) * 0.4).astype(np.float32) for k, shape in names.items()}


def _saelens(folder: Path, arch: str, params: dict[str, np.ndarray], **cfg) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: torch.from_numpy(v) for k, v in params.items()},
              folder / "sae_weights.safetensors")
    hook = cfg.pop("hook", "blocks.1.hook_resid_post")
    body = {"d_in": D, "d_sae": N, "architecture": arch, "metadata": {"hook_name": hook}, **cfg}
    (folder / "cfg.json").write_text(json.dumps(body))
    return folder


# -- the formats' own formulas (numpy) ---------------------------------------------------

def relu(a):
    return np.maximum(a, 0)


def saelens_reference(x, p, arch, cfg):
    """SAELens 6.x: process_sae_in (normalise, minus b_dec), the architecture's activation,
    decode (plus b_dec, un-normalise; transcoders add x @ W_skip.T)."""
    h, norm = x.astype(np.float64), cfg.get("normalize_activations", "none")
    if norm == "constant_norm_rescale":
        c = np.sqrt(D) / np.linalg.norm(h, axis=-1, keepdims=True)
        h = h * c
    elif norm == "layer_norm":
        mu = h.mean(-1, keepdims=True)
        sd = (h - mu).std(-1, ddof=1, keepdims=True)
        h = (h - mu) / (sd + 1e-5)
    if "transcoder" not in arch and cfg.get("apply_b_dec_to_input", True):
        h = h - p["b_dec"]
    if arch == "gated":
        a = ((h @ p["W_enc"] + p["b_gate"]) > 0) * relu(h @ (p["W_enc"] * np.exp(p["r_mag"]))
                                                        + p["b_mag"])
    else:
        pre = h @ p["W_enc"] + p["b_enc"]
        if arch == "topk":
            if cfg.get("rescale_acts_by_decoder_norm"):
                pre = pre * np.linalg.norm(p["W_dec"], axis=-1)
            idx = np.argsort(-pre, axis=-1)[:, :cfg["k"]]
            a = np.zeros_like(pre)
            np.put_along_axis(a, idx, relu(np.take_along_axis(pre, idx, -1)), -1)
        else:
            a = relu(pre) * ((pre > p["threshold"]) if "jumprelu" in arch else 1)
    dec = a / np.linalg.norm(p["W_dec"], axis=-1) if cfg.get("rescale_acts_by_decoder_norm") \
        else a
    y = dec @ p["W_dec"] + p["b_dec"]
    if "transcoder" in arch:
        return a, y + (x @ p["W_skip"].T if "W_skip" in p else 0)
    if norm == "constant_norm_rescale":
        y = y / c
    elif norm == "layer_norm":
        y = y * sd + mu
    return a, y


STANDARD = {"W_enc": (D, N), "b_enc": (N,), "W_dec": (N, D), "b_dec": (D,)}
CASES = {
    "standard": ("standard", STANDARD, {}),
    "topk": ("topk", STANDARD, {"k": 6}),
    "topk, rescaled by decoder norm": ("topk", STANDARD,
                                       {"k": 6, "rescale_acts_by_decoder_norm": True}),
    "jumprelu": ("jumprelu", {**STANDARD, "threshold": (N,)}, {}),
    "gated": ("gated", {"W_enc": (D, N), "b_gate": (N,), "r_mag": (N,), "b_mag": (N,),
                        "W_dec": (N, D), "b_dec": (D,)}, {}),
    "no b_dec on the input": ("standard", STANDARD, {"apply_b_dec_to_input": False}),
    "constant norm rescale": ("standard", STANDARD,
                              {"normalize_activations": "constant_norm_rescale"}),
    "layer norm": ("topk", STANDARD, {"k": 6, "normalize_activations": "layer_norm"}),
    "transcoder": ("transcoder", STANDARD, {"hook": "blocks.1.mlp.hook_in"}),
    "skip transcoder": ("skip_transcoder", {**STANDARD, "W_skip": (D, D)},
                        {"hook": "blocks.1.hook_mlp_in"}),
    "jumprelu transcoder": ("jumprelu_transcoder", {**STANDARD, "threshold": (N,)},
                            {"hook": "blocks.1.mlp.hook_in"}),
}


@pytest.mark.parametrize("case", CASES)
def test_saelens_encode_and_decode_are_its_formulas(case, tmp_path):
    arch, shapes, cfg = CASES[case]
    params = _random(1, shapes)
    if "threshold" in params:
        params["threshold"] = np.abs(params["threshold"])
    sae = load_dictionary(str(_saelens(tmp_path / "sae", arch, params, **cfg)))
    cfg.pop("hook", None)
    want_a, want_y = saelens_reference(X, params, arch, cfg)
    x = torch.from_numpy(X)
    latents = sae.encode(x)
    assert np.abs(latents.numpy() - want_a).max() <= 1e-6 * max(1, np.abs(want_a).max())
    assert np.abs(sae.decode(latents, x).numpy() - want_y).max() <= 1e-6 * np.abs(want_y).max()
    assert (latents > 0).any()
    if "transcoder" in arch:
        assert sae.out_site.component == "mlp_out" and sae.transcoder
    else:
        assert sae.site == sae.out_site


def test_a_pre_6_saelens_cfg_reads_its_hook_point_and_topk_activation(tmp_path):
    params = _random(2, STANDARD)
    folder = tmp_path / "old"
    folder.mkdir()
    save_file({k: torch.from_numpy(v) for k, v in params.items()},
              folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps({
        "d_in": D, "d_sae": N, "hook_point": "blocks.3.hook_resid_pre", "hook_point_layer": 3,
        "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}}))
    sae = load_dictionary(str(folder))
    assert (str(sae.site), sae.activation, sae.k, sae.center) == ("resid_pre@3", "topk", 4, True)
    want, _ = saelens_reference(X, params, "topk", {"k": 4})
    assert np.abs(sae.encode(torch.from_numpy(X)).numpy() - want).max() <= 1e-6 * 10


# -- Gemma Scope ---------------------------------------------------------------------------

def gemma_reference(x, p):
    """Gemma Scope's tutorial JumpReLUSAE: no input centring, a strict threshold."""
    pre = x @ p["w_enc"] + p["b_enc"]
    a = (pre > p["threshold"]) * relu(pre)
    return a, a @ p["w_dec"] + p["b_dec"] + (x @ p["affine_skip_connection"]
                                             if "affine_skip_connection" in p else 0)


@pytest.mark.parametrize("layout", ["npz", "safetensors + config.json", "transcoder"])
def test_gemma_scope_encode_and_decode_are_its_formulas(layout, tmp_path):
    p = _random(3, {"w_enc": (D, N), "b_enc": (N,), "w_dec": (N, D), "b_dec": (D,),
                    "threshold": (N,)})
    p["threshold"] = np.abs(p["threshold"])
    if layout == "npz":
        folder = tmp_path / "gemma-scope-2b-pt-res" / "layer_2" / "width_16k" / "average_l0_9"
        folder.mkdir(parents=True)
        np.savez(folder / "params.npz", **{k.upper() if k.startswith("w_") else k: v
                                           for k, v in p.items()})
        spec, site = str(folder / "params.npz"), ("resid_post@2", "resid_post@2")
    else:
        group = "transcoder" if layout == "transcoder" else "resid_post"
        folder = tmp_path / group / "layer_1_width_16k_l0_small_affine"
        folder.mkdir(parents=True)
        if layout == "transcoder":
            p["affine_skip_connection"] = _random(4, {"a": (D, D)})["a"]
            hooks = {"hf_hook_point_in": "model.layers.1.pre_feedforward_layernorm.output",
                     "hf_hook_point_out": "model.layers.1.post_feedforward_layernorm.output"}
            site = ("mlp_in@1", "mlp_out@1")
        else:
            hooks, site = {"hf_hook_point_in": "model.layers.1.output"}, ("resid_post@1",) * 2
        (folder / "config.json").write_text(json.dumps({"architecture": "jump_relu", **hooks}))
        save_file({k: torch.from_numpy(v) for k, v in p.items()}, folder / "params.safetensors")
        spec = str(folder)
    sae = load_dictionary(spec)
    assert (str(sae.site), str(sae.out_site), sae.activation) == (*site, "jumprelu")
    want_a, want_y = gemma_reference(X, p)
    x = torch.from_numpy(X)
    latents = sae.encode(x)
    assert np.abs(latents.numpy() - want_a).max() <= 1e-6 * np.abs(want_a).max()
    assert np.abs(sae.decode(latents, x).numpy() - want_y).max() <= 1e-6 * np.abs(want_y).max()


def test_a_jumprelu_threshold_is_strict(tmp_path):
    """Gemma Scope: mask = pre > threshold, so a pre-activation equal to it stays silent."""
    p = {"w_enc": np.eye(D, N, dtype=np.float32), "b_enc": np.zeros(N, np.float32),
         "w_dec": np.eye(N, D, dtype=np.float32), "b_dec": np.zeros(D, np.float32),
         "threshold": np.full(N, 0.5, np.float32)}
    folder = tmp_path / "resid_post" / "layer_0_width_16k_l0_small"
    folder.mkdir(parents=True)
    save_file({k: torch.from_numpy(v) for k, v in p.items()}, folder / "params.safetensors")
    x = torch.zeros(1, D)
    x[0, :3] = torch.tensor([0.5, np.nextafter(np.float32(0.5), np.float32(1)), 0.4])
    latents = load_dictionary(str(folder)).encode(x)[0]
    assert latents[:3].tolist() == [0.0, float(x[0, 1]), 0.0]


# -- sparsify ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sae", "groupmax", "transcoder with a skip"])
def test_sparsify_folders_encode_and_decode_as_sparse_coder_does(kind, tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSIFY_DISABLE_TRITON", "1")
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(5)
    cfg = SparseCoderConfig(num_latents=N, k=6, activation="groupmax" if kind == "groupmax"
                            else "topk", transcode=kind != "sae" and kind != "groupmax",
                            skip_connection=kind.endswith("skip"))
    coder = SparseCoder(D, cfg)
    with torch.no_grad():
        for param in coder.parameters():
            param.copy_(torch.randn_like(param) * 0.4)
    hook = "layers.2.mlp" if cfg.transcode else "layers.2"
    coder.save_to_disk(tmp_path / hook)
    sae = load_dictionary(str(tmp_path / hook))
    assert str(sae.site) == ("mlp_in@2" if cfg.transcode else "resid_post@2")
    x = torch.from_numpy(X)
    with torch.no_grad():
        top_acts, top_indices, _ = coder.encode(x)
        theirs = torch.zeros(len(x), N).scatter(-1, top_indices, top_acts)
        latents = sae.encode(x)
        assert torch.equal(latents > 0, theirs > 0)  # the same latents
        assert (latents - theirs).abs().max() <= 1e-6 * theirs.abs().max()
        out = coder(x).sae_out
        assert (sae.decode(latents, x) - out).abs().max() <= 1e-6 * out.abs().max()


# -- specs, hub paths and fitting the model --------------------------------------------------

HUB_SCRIPT = """
import sys
from pytest_interp.dictionaries.formats import load_dictionary
from pytest_interp.errors import InterpError
for spec in sys.argv[1:]:
    try:
        sae = load_dictionary(spec)
        print("LOADED", sae.site, sae.n_latents)
    except InterpError as exc:
        print("ERROR", exc)
"""


def test_a_hub_path_with_a_revision_loads_offline_from_the_hugging_face_cache(tmp_path):
    """``org/repo/folder@rev`` through Hugging Face's own cache (a hub layout built here,
    HF_HUB_OFFLINE set by the test): the revision's snapshot, that folder alone."""
    repo = tmp_path / "hub" / "models--google--gemma-scope-2-270m-pt"
    for ref, commit, width in (("main", "a" * 40, N), ("v2", "b" * 40, 2 * N)):
        folder = repo / "snapshots" / commit / "resid_post" / "layer_3_width_16k_l0_small"
        folder.mkdir(parents=True)
        p = _random(6, {"w_enc": (D, width), "b_enc": (width,), "w_dec": (width, D),
                        "b_dec": (D,), "threshold": (width,)})
        save_file({k: torch.from_numpy(v) for k, v in p.items()}, folder / "params.safetensors")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home"),
           "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    base = "google/gemma-scope-2-270m-pt/resid_post/layer_3_width_16k_l0_small"
    out = subprocess.run([sys.executable, "-c", HUB_SCRIPT, base, base + "@v2", base + "@v9"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [
        f"LOADED resid_post@3 {N}", f"LOADED resid_post@3 {2 * N}",
        f"ERROR sae '{base}@v9' is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
        "fetch it once with `hf download google/gemma-scope-2-270m-pt --include "
        "'resid_post/layer_3_width_16k_l0_small/*' --revision v9` (or check the path, the "
        "revision and HF_TOKEN)"]


def test_hook_names_read_what_transformer_lens_and_hugging_face_mean_by_them():
    """TransformerLens's hook_mlp_in fires on resid_mid, before the norm (mlp.hook_in after
    it); ln2.hook_normalized is that norm without its weight; mlp.hook_out and HF's mlp are
    the MLP module's own output, which is mlp_out only where no norm follows it."""
    from pytest_interp.dictionaries.formats import Hook, hook_of
    from pytest_interp.sites import Site

    assert {hook: hook_of(hook, "s") for hook in (
        "blocks.3.hook_mlp_in", "blocks.3.ln2.hook_normalized", "blocks.3.mlp.hook_in",
        "blocks.3.hook_mlp_out", "blocks.3.mlp.hook_out", "model.layers.3.mlp",
        "model.layers.3.post_feedforward_layernorm.output", "layers.3.mlp.input",
        "h.3")} == {
        "blocks.3.hook_mlp_in": Hook(Site(3, "resid_mid"), mlp_branch=True),
        "blocks.3.ln2.hook_normalized": Hook(Site(3, "resid_mid"), unit_norm=True,
                                             mlp_branch=True),
        "blocks.3.mlp.hook_in": Hook(Site(3, "mlp_in")),
        "blocks.3.hook_mlp_out": Hook(Site(3, "mlp_out")),
        "blocks.3.mlp.hook_out": Hook(Site(3, "mlp_out"), raw_mlp=True),
        "model.layers.3.mlp": Hook(Site(3, "mlp_out"), raw_mlp=True),
        "model.layers.3.post_feedforward_layernorm.output": Hook(Site(3, "mlp_out")),
        "layers.3.mlp.input": Hook(Site(3, "mlp_in")),
        "h.3": Hook(Site(3, "resid_post")),
    }


@pytest.mark.parametrize(("hook", "why"), [
    ("blocks.2.ln2.hook_normalized",
     "writes ln2.hook_normalized, the norm before the MLP without its weight, which no module "
     "outputs: pytest-interp cannot splice its reconstruction in (it reads transcoders from "
     "there to the MLP's output)"),
    ("blocks.2.hook_mlp_in",
     "writes hook_mlp_in, the MLP's own copy of the residual stream, where pytest-interp "
     "splices no reconstruction (it reads transcoders from there to the MLP's output); an SAE "
     "of that residual, spliced into it, is one of hook_resid_mid"),
])
def test_an_sae_on_the_mlps_own_input_is_refused_in_one_line(hook, why, tmp_path):
    """Its reconstruction could be spliced into no module's output (ln2.hook_normalized), or
    into the MLP's branch alone (hook_mlp_in), where pytest-interp splices none."""
    folder = _saelens(tmp_path / "n", "standard", _random(9, STANDARD), hook=hook)
    with pytest.raises(InterpError) as err:
        load_dictionary(str(folder))
    assert str(err.value) == f"sae '{folder}' {why}"


def test_unknown_hooks_missing_files_and_bad_labels_are_one_line_each(tmp_path):
    params = _random(7, STANDARD)
    with pytest.raises(InterpError) as err:
        load_dictionary(str(_saelens(tmp_path / "z", "standard", params,
                                     hook="blocks.4.attn.hook_z")))
    assert str(err.value) == (
        f"sae '{tmp_path / 'z'}' reads 'blocks.4.attn.hook_z', a hook we do not read: "
        "pytest-interp reads blocks.L.hook_resid_pre, blocks.L.hook_resid_mid, "
        "blocks.L.hook_resid_post, blocks.L.hook_attn_out, blocks.L.hook_mlp_out, "
        "blocks.L.hook_mlp_in, blocks.L.ln2.hook_normalized, blocks.L.mlp.hook_in, "
        "blocks.L.mlp.hook_out (and the Hugging Face paths layers.L, layers.L.mlp)")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InterpError, match=r"holds no dictionary: expected SAELens's cfg\.json"):
        load_dictionary(str(tmp_path / "empty"))
    with pytest.raises(InterpError) as err:
        load_dictionary("./nowhere")
    assert str(err.value) == ("sae './nowhere' is neither a file nor a folder here, nor a hub "
                              "path org/repo/folder@revision")
    folder = _saelens(tmp_path / "labelled", "standard", params)
    (folder / "labels.json").write_text(json.dumps({"3": "capital cities", "x": "?"}))
    with pytest.raises(InterpError) as err:
        load_dictionary(str(folder))
    assert str(err.value) == (
        f"sae '{folder}': {folder / 'labels.json'} maps 'x' to '?': a labels file maps latent "
        'numbers to descriptions, {"4512": "capital cities"}')
    (folder / "labels.json").write_text(json.dumps({"3": "capital cities"}))
    assert load_dictionary(str(folder)).labels == {3: "capital cities"}


def test_a_dictionary_that_does_not_fit_the_model_is_refused_before_any_pass(load_backend,
                                                                             tmp_path):
    from pytest_interp.model import InterpModel

    model = InterpModel(load_backend("tiny-random-llama"))
    wide = {"W_enc": (D, N), "b_enc": (N,), "W_dec": (N, D), "b_dec": (D,)}
    folder = _saelens(tmp_path / "wide", "standard", _random(8, wide),
                      hook="blocks.9.hook_resid_post")
    with pytest.raises(InterpError) as err:
        model.features("The cat sat", sae=str(folder))
    info = model.info
    assert str(err.value) == (
        f"SAE '{folder}' (relu, {N} latents at resid_post@9) does not fit {info.name}: its site "
        f"resid_post@9 is beyond the model's {info.n_layers} layers; its d_in is {D}, the "
        f"model's d_model {info.d_model}; its d_out is {D}, the model's d_model {info.d_model}")
    assert model.memo.stats.passes == 0
