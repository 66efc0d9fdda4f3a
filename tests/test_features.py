"""The dictionary probes against independent references: the spliced loss equals a splice
made with raw Hugging Face hooks, and feature attribution equals activation x gradient
computed with plain autograd; then the markers, through pytester."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pytest_interp.dictionaries.formats import load_dictionary
from pytest_interp.errors import InterpError
from pytest_interp.model import InterpModel
from pytest_interp.sites import Site

from .hf_reference import _get, _parts

TEXTS = ["When Mary and John went to the store, John gave a drink to",
         "The cat sat on the mat and looked at the dog"]


def write_sae(folder: Path, d: int, n: int = 96, *, hook: str = "blocks.1.hook_resid_post",
              arch: str = "topk", seed: int = 0) -> Path:
    """A seeded random SAELens dictionary for a model of width ``d``."""
    g = torch.Generator().manual_seed(seed)
    weights = {"W_enc": torch.randn(d, n, generator=g) / d ** 0.5,
               "b_enc": torch.randn(n, generator=g) * 0.1,
               "W_dec": torch.randn(n, d, generator=g) / n ** 0.5,
               "b_dec": torch.randn(d, generator=g) * 0.1}
    if arch == "skip_transcoder":
        weights["W_skip"] = torch.randn(d, d, generator=g) / d
    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, folder / "sae_weights.safetensors")
    (folder / "cfg.json").write_text(json.dumps({
        "d_in": d, "d_sae": n, "architecture": arch, "k": 8,
        "apply_b_dec_to_input": arch == "topk", "metadata": {"hook_name": hook}}))
    return folder


@torch.no_grad()
def hf_spliced_losses(raw, ids: torch.Tensor, sae, skip: int) -> tuple[float, float]:
    """(clean, spliced) mean next-token loss over predictions from ``skip`` on, the
    reconstruction put in by a plain forward hook on the block (an SAE) or the MLP (a
    transcoder, reading the MLP's input)."""
    block = _get(raw, _parts(raw).blocks)[sae.site.layer]
    if sae.transcoder:
        module = _get(block, _parts(raw).mlp_out)

        def hook(mod, args, output):
            x = args[0]
            out = output.clone()
            out[:, skip:] = sae.decode(sae.encode(x[:, skip:]), x[:, skip:])
            return out
    else:
        module = block

        def hook(mod, args, output):
            hidden = (output[0] if isinstance(output, tuple) else output).clone()
            x = hidden[:, skip:]
            hidden[:, skip:] = sae.decode(sae.encode(x), x)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    def loss() -> float:
        logp = torch.log_softmax(raw(ids).logits[:, skip:-1].float(), -1)
        return float(-logp.gather(-1, ids[:, skip + 1:, None]).mean())

    clean = loss()
    handle = module.register_forward_hook(hook)
    try:
        return clean, loss()
    finally:
        handle.remove()


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.parametrize("kind", ["sae", "transcoder"])
def test_the_spliced_loss_equals_a_raw_hf_hook_splice(kind, backend, load_backend, load_raw_hf,
                                                      tmp_path):
    model = InterpModel(load_backend("tiny-random-llama", backend))
    raw = load_raw_hf("tiny-random-llama").model
    d = model.info.d_model
    folder = write_sae(tmp_path / kind, d, hook="blocks.1.hook_resid_post" if kind == "sae"
                       else "blocks.1.mlp.hook_in",
                       arch="topk" if kind == "sae" else "skip_transcoder")
    sae = load_dictionary(str(folder))
    for skip in (0, 1):
        for text in TEXTS:
            ours = model.sae_fidelity(text, sae=str(folder), skip=skip)
            clean, spliced = hf_spliced_losses(raw, model.tokens(text).tensor(), sae, skip)
            assert abs(ours.ce_clean - clean) <= 1e-4
            assert abs(ours.ce_spliced - spliced) <= 1e-4
            assert abs(ours.error_term_change) <= 1e-5
            assert ours.kl > 1e-3  # the random dictionary really changed the run
    both = model.sae_fidelity(TEXTS, sae=str(folder))
    parts = [model.sae_fidelity(t, sae=str(folder)) for t in TEXTS]
    assert both.positions == sum(p.positions for p in parts)
    assert both.sse == pytest.approx(sum(p.sse for p in parts))
    assert both.ce_spliced == pytest.approx(
        sum(p.ce_spliced * p.positions for p in parts) / both.positions)


def _norms_randomised(spec: str, folder: Path) -> Path:
    """``spec`` saved to ``folder`` with every norm's weight (and bias) seeded random, so a
    norm's output is not its unweighted value."""
    from pytest_interp.backends.loading import load_hf, resolve_spec

    loaded = load_hf(resolve_spec(spec))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "norm" in name or ".ln" in name:
                param.copy_(torch.randn(param.shape, generator=g) * 0.5 + ("bias" not in name))
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3", "gpt-neox"])
def test_transformer_lens_hook_names_read_transformer_lens_s_own_values(family, load_backend,
                                                                         tmp_path):
    """Transcoders on ``blocks.1.ln2.hook_normalized`` and ``blocks.1.hook_mlp_in`` encode the
    very tensors a TransformerBridge caches under those names (LayerNorm, RMSNorm, Gemma's
    1 + w, parallel blocks, where both read resid_pre), on both backends, with every norm's
    weight random."""
    folder = _norms_randomised(f"tiny-random-{family}", tmp_path / "m")
    bridge = load_backend(str(folder)).bridge
    bridge.set_use_hook_mlp_in(True)
    models = {b: InterpModel(load_backend(str(folder), b))
              for b in ("transformer_lens", "nnsight")}
    d = models["nnsight"].info.d_model
    hooks = {"blocks.1.ln2.hook_normalized": "skip_transcoder",
             "blocks.1.hook_mlp_in": "transcoder"}
    for text in TEXTS:
        ids = models["nnsight"].tokens(text).tensor()
        _, cache = bridge.run_with_cache(ids, names_filter=list(hooks))
        for hook, arch in hooks.items():
            sae = load_dictionary(str(write_sae(tmp_path / arch, d, hook=hook, arch=arch)))
            want = replace(sae, unit_norm=False).encode(cache[hook][0]).numpy()
            assert (want > 0).any()
            for backend, model in models.items():
                got = model.features(text, sae=str(tmp_path / arch)).dense()
                assert np.abs(got - want).max() <= 1e-4, (hook, backend)
        model = models["nnsight"]  # mlp_in, which these hooks were once read as, differs
        mlp_in = model.run(model.tokens(text), read={Site(1, "mlp_in")}).acts[Site(1, "mlp_in")]
        assert (mlp_in[0] - cache["blocks.1.ln2.hook_normalized"][0]).abs().max() > 0.1


def test_a_dictionary_of_the_mlp_modules_own_output_is_refused_after_a_post_norm(
        load_backend, tmp_path):
    """sparsify's ``layers.1.mlp`` is the MLP's output before Gemma's post-feedforward norm,
    not the mlp_out the residual stream adds."""
    model = InterpModel(load_backend("tiny-random-gemma3"))
    d = model.info.d_model
    folder = tmp_path / "layers.1.mlp"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(32, d, generator=g),
               "encoder.bias": torch.zeros(32), "W_dec": torch.randn(32, d, generator=g),
               "b_dec": torch.zeros(d)}, folder / "sae.safetensors")
    (folder / "cfg.json").write_text(json.dumps({"k": 4, "transcode": True}))
    with pytest.raises(InterpError) as err:
        model.features(TEXTS[0], sae=str(folder))
    assert str(err.value) == (
        f"transcoder '{folder}' (topk k=4, 32 latents at mlp_in@1 -> mlp_out@1) does not fit "
        f"{model.info.name}: it reads the MLP module's own output, and the model normalises "
        "that before adding it, where pytest-interp's mlp_out is: use a dictionary of "
        "post_feedforward_layernorm.output (TransformerLens's blocks.L.hook_mlp_out)")
    assert model.memo.stats.passes == 0


def test_a_normalized_hook_needs_a_norm_before_the_mlp_and_a_model_to_bind_it(load_backend,
                                                                             tmp_path):
    """OLMo-2 has no norm before its MLP (it normalises the MLP's output), so there is no
    ln2.hook_normalized to read; and a dictionary read from that hook encodes only once a
    model's norm is bound."""
    model = InterpModel(load_backend("tiny-random-olmo2"))
    folder = write_sae(tmp_path / "tc", model.info.d_model, hook="blocks.1.ln2.hook_normalized",
                       arch="skip_transcoder")
    with pytest.raises(InterpError) as err:
        model.features(TEXTS[0], sae=str(folder))
    assert str(err.value) == (
        f"transcoder '{folder}' (relu k=8, 96 latents at resid_mid@1 -> mlp_out@1) does not fit "
        f"{model.info.name}: it reads ln2.hook_normalized, and the model has no norm before "
        "its MLP")
    sae = load_dictionary(str(folder))
    with pytest.raises(InterpError) as err:
        sae.encode(torch.zeros(3, model.info.d_model))
    assert str(err.value) == (
        f"transcoder '{folder}' (relu k=8, 96 latents at resid_mid@1 -> mlp_out@1) reads "
        "ln2.hook_normalized: bind a model's norm first (Dictionary.fitted(info))")


def test_fvu_and_l0_are_their_definitions(load_backend, tmp_path):
    model = InterpModel(load_backend("tiny-random-llama"))
    folder = write_sae(tmp_path / "sae", model.info.d_model)
    sae = load_dictionary(str(folder))
    from pytest_interp.sites import Site

    ys = [model.run(t, read=[Site(1, "resid_post")]).acts[Site(1, "resid_post")][0, 1:]
          for t in TEXTS]
    y = torch.cat(ys).double()
    y_hat = sae.decode(sae.encode(y.float())).double()
    fvu = float(((y - y_hat) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    result = model.sae_fidelity(TEXTS, sae=str(folder))
    assert result.fvu == pytest.approx(fvu, rel=1e-5)
    assert result.l0 == 8.0  # top-k with k=8 and positive pre-activations


@pytest.mark.parametrize(("backend", "skip"), [("transformer_lens", 1), ("nnsight", 0)])
def test_feature_attribution_is_activation_times_gradient(backend, skip, load_backend,
                                                           load_raw_hf, tmp_path):
    """Each latent's score equals a * d(logit diff)/da through a raw HF hook and autograd;
    the error node's, err . d/d(err); verify_top_k patches each node exactly. The first
    ``skip`` positions have no nodes (the attention sink)."""
    model = InterpModel(load_backend("tiny-random-llama", backend))
    raw = load_raw_hf("tiny-random-llama").model
    folder = write_sae(tmp_path / "sae", model.info.d_model)
    sae = load_dictionary(str(folder))
    prompt, answer, foil = TEXTS[0], " Mary", " John"
    result = model.feature_attribution(prompt, sae=str(folder), answer=answer, foil=foil,
                                       verify_top_k=5, skip=skip)
    ids = model.tokens(prompt).tensor()
    block = _get(raw, _parts(raw).blocks)[1]
    leaves = {}

    def hook(mod, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        a = sae.encode(hidden.detach()).requires_grad_(True)
        err = (hidden.detach() - sae.decode(a.detach())).requires_grad_(True)
        leaves.update(a=a, err=err)
        new = sae.decode(a) + err
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block.register_forward_hook(hook)
    try:
        logits = raw(ids).logits[0, -1]
    finally:
        handle.remove()
    a_id, f_id = model.vocab.id(answer), model.vocab.id(foil)
    (logits[a_id] - logits[f_id]).backward()
    a, err = leaves["a"], leaves["err"]
    scores = (a * a.grad)[0].detach()
    for position, latent, score in result.top(20):
        assert position >= skip
        assert abs(score - float(scores[position, latent])) <= 1e-5
    want = (err * err.grad).sum(-1)[0].detach().numpy()
    assert np.abs(result.error[skip:] - want[skip:]).max() <= 1e-5
    assert not result.error[:skip].any()
    assert abs(result.clean_metric - float((logits[a_id] - logits[f_id]).detach())) <= 1e-4
    assert len(result.exact) == 5
    for (position, latent), drop in result.exact.items():  # each node zeroed, by hand
        zeroed = a.detach().clone()
        zeroed[0, position, latent] = 0
        delta = (sae.decode(zeroed) - sae.decode(a.detach()))[0, position]

        def add(mod, args, output, p=position, delta=delta):
            hidden = (output[0] if isinstance(output, tuple) else output).clone()
            hidden[0, p] += delta
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        handle = block.register_forward_hook(add)
        try:
            with torch.no_grad():
                edited = raw(ids).logits[0, -1]
        finally:
            handle.remove()
        assert abs(drop - (result.clean_metric - float(edited[a_id] - edited[f_id]))) <= 1e-4


@pytest.mark.parametrize("method", ["zero", "mean"])
def test_latent_ablation_equals_a_raw_hf_hook_that_changes_those_latents(method, load_backend,
                                                                         load_raw_hf, tmp_path):
    """The ablation kind with sae=: the chosen latents zeroed (or set to their mean over the
    prompts) from position 1 on, the decoder's change added to the block's output by a plain
    hook; control sets are drawn from the latents active on the prompt."""
    from pytest_interp.probes.ablation import Case
    from pytest_interp.probes.features import LatentAblation

    model = InterpModel(load_backend("tiny-random-llama"))
    raw = load_raw_hf("tiny-random-llama").model
    folder = write_sae(tmp_path / "sae", model.info.d_model)
    sae = load_dictionary(str(folder))
    prompt, answer, foil = TEXTS[0], " Mary", " John"
    first = model.features(prompt, sae=str(folder))
    chosen = sorted({i for i, _ in first.active(-1)[:2]} | {i for i, _ in first.active(3)[:1]})
    spec = LatentAblation((Case(prompt, answer, foil),), str(folder), tuple(chosen),
                          method=method, control=4, seed=1)
    (result,) = model.latent_ablation_rows(spec)
    ids = model.tokens(prompt).tensor()
    block = _get(raw, _parts(raw).blocks)[1]
    a_id, f_id = model.vocab.id(answer), model.vocab.id(foil)

    def metric_with(latents: list[int]) -> float:
        def hook(mod, args, output):
            hidden = output[0] if isinstance(output, tuple) else output
            x = hidden[0, 1:]
            a = sae.encode(x)
            changed = a.clone()
            mean = sae.encode(hidden[0, 1:]).mean(0) if method == "mean" else torch.zeros(96)
            changed[:, latents] = mean[latents]
            new = hidden.clone()
            new[0, 1:] += sae.decode(changed, x) - sae.decode(a, x)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        handle = block.register_forward_hook(hook)
        try:
            with torch.no_grad():
                logits = raw(ids).logits[0, -1]
        finally:
            handle.remove()
        return float(logits[a_id] - logits[f_id])

    assert abs(result.ablated - metric_with(chosen)) <= 1e-4
    assert result.parts == tuple(f"latent {i}" for i in chosen)
    assert len(result.controls) == 4
    active = {i for p in range(1, len(first.str_tokens)) for i, _ in first.active(p)}
    for names, value in zip(result.control_sets, result.controls, strict=True):
        latents = [int(n.split()[1]) for n in names]
        assert set(latents) <= active - set(chosen) and len(latents) == len(chosen)
        assert abs(value - metric_with(latents)) <= 1e-4
