"""Snapshots are loud about real change and quiet about noise: the SmolLM2 example suite's
committed snapshots against variants of the model that any user would call the same model,
and against real damage.

The variants are built in memory by a conftest (pytest_interp_load_model). The benign noise
is drawn with another seed than the one the noise floors were measured with, and the other
benign variants are exact symmetries the floors never saw.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SUITE = Path(__file__).resolve().parents[1] / "example_suites" / "smollm2"

VARIANTS = '''
import torch

from pytest_interp.backends.loading import load_hf, resolve_spec


def fine_tune(model, tokenizer, steps):
    """A short seeded fine-tune (AdamW, lr 1e-5) on a page of Python's own documentation (its
    first 64 tokens: Adam's steps are about lr whatever the batch, and a pass over 128 cost
    twice the time on one core; fused: the optimizer step in 0.3 s, not 0.6)."""
    from pydoc_data.topics import topics

    ids = tokenizer(topics["assert"], return_tensors="pt").input_ids[:, :64]
    model.requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    for _ in range(steps):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.requires_grad_(False)


def variant(name):
    loaded = load_hf(resolve_spec("smollm2-135m"))
    model, layers = loaded.model, loaded.model.model.layers
    head_dim = model.config.hidden_size // model.config.num_attention_heads
    g = torch.Generator().manual_seed(1)
    if name.startswith("fine-tuned "):  # "fine-tuned 10 steps"
        fine_tune(model, loaded.tokenizer, int(name.split()[1]))
        return model, loaded.tokenizer
    with torch.no_grad():
        if name == "bfloat16 round trip":
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(p.dtype))
        elif name == "1e-3 relative noise":
            for p in model.parameters():
                p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g))
        elif name == "permuted MLP neurons":
            for layer in layers:
                mlp = layer.mlp
                perm = torch.randperm(mlp.up_proj.weight.shape[0], generator=g)
                mlp.gate_proj.weight.copy_(mlp.gate_proj.weight[perm])
                mlp.up_proj.weight.copy_(mlp.up_proj.weight[perm])
                mlp.down_proj.weight.copy_(mlp.down_proj.weight[:, perm])
        elif name == "up/down rescaled":
            for layer in layers:
                mlp = layer.mlp
                c = torch.exp(torch.randn(mlp.up_proj.weight.shape[0], generator=g) * 0.5)
                mlp.up_proj.weight.mul_(c[:, None])
                mlp.down_proj.weight.div_(c[None, :])
        elif name == "induction head L18H6 zeroed":
            attn = layers[18].self_attn
            attn.q_proj.weight[6 * head_dim:7 * head_dim] = 0
            attn.o_proj.weight[:, 6 * head_dim:7 * head_dim] = 0
        elif name == "layers 14 and 15 swapped":
            layers[14], layers[15] = layers[15], layers[14]
        elif name == "block 25 skipped":
            layers[25].self_attn.o_proj.weight.zero_()
            layers[25].mlp.down_proj.weight.zero_()
        elif name == "rank-1 edit of MLP 20":
            down = layers[20].mlp.down_proj.weight
            u = torch.randn(down.shape[0], generator=g)
            v = torch.randn(down.shape[1], generator=g)
            down.add_(torch.outer(u, v) * (down.norm() / (u.norm() * v.norm())))
        elif name == "last four MLPs zeroed":
            for layer in layers[-4:]:
                layer.mlp.down_proj.weight.zero_()
        else:
            raise ValueError(name)
    return model, loaded.tokenizer


def pytest_interp_load_model(spec, request):
    return variant(spec.removeprefix("variant:")) if spec.startswith("variant:") else None
'''

BENIGN = ["bfloat16 round trip", "1e-3 relative noise", "permuted MLP neurons",
          "up/down rescaled"]
HARMFUL = ["induction head L18H6 zeroed", "layers 14 and 15 swapped", "block 25 skipped",
           "rank-1 edit of MLP 20", "last four MLPs zeroed"]


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(SUITE / "test_snapshots.py", pytester.path / "test_snapshots.py")
    shutil.copytree(SUITE / "__snapshots__", pytester.path / "__snapshots__")
    pytester.makeconftest(VARIANTS)
    pytester.makeini("[pytest]\ninterp_model = smollm2-135m\n")
    return pytester


@pytest.mark.slow
@pytest.mark.parametrize("name", BENIGN)
def test_a_benign_variant_leaves_every_snapshot_green(suite, name):
    result = suite.runpytest(f"--interp-model=variant:{name}", "--snapshot-details")
    assert result.ret == 0, result.stdout.str()[-5000:]
    result.assert_outcomes(passed=6)


@pytest.mark.slow
@pytest.mark.parametrize("name", HARMFUL)
def test_real_damage_fails_a_snapshot_in_model_terms(suite, name):
    result = suite.runpytest(f"--interp-model=variant:{name}")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) >= 1, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*changed beyond the noise floor (tolerances *), * change*"])
