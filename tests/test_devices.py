"""Devices and dtypes: half precision on CPU, auto device, GPU-only checks, scaled tolerances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp.backends.load import load_backend
from pytest_interp.errors import ModelSpecError
from pytest_interp.model import InterpModel
from pytest_interp.results import AttentionResult, attention_labels
from pytest_interp.settings import ModelRequest
from pytest_interp.snapshot import InterpSnapshotExtension, dtype_scale, parse, render

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

FACT = "The capital of France is"
IOI = ("When Mary and John went to the store, John gave a drink to",
       "When Mary and John went to the store, Mary gave a drink to")
NO_GPU = "needs a CUDA GPU: torch sees none on this machine (CPU-only)"


@pytest.fixture(scope="module")
def bf16(load_backend):
    return {b: InterpModel(load_backend("smollm2-135m", b, dtype="bfloat16"))
            for b in ("transformer_lens", "nnsight")}


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
@pytest.mark.slow
def test_smollm2_in_bfloat16_still_knows_paris_and_does_ioi(bf16, smollm2, backend):
    model = bf16[backend]
    assert model.info.dtype == "bfloat16"
    lens = model.logit_lens(FACT)
    assert lens.rank(" Paris", layer=-1) == 0
    full = smollm2.logit_diff(IOI[0], " Mary", " John")
    half = model.logit_diff(IOI[0], " Mary", " John")
    print(f"{backend}: IOI logit diff float32 {full:+.3f}, bfloat16 {half:+.3f}")
    assert half > 3 and abs(half - full) < 0.1 * dtype_scale("bfloat16")  # measured 0.036
    patching = model.activation_patching(*IOI, answer=" Mary", foil=" John", layers=[0, 29])
    assert np.isfinite(patching.recovery[[0, 29]]).all()


def test_half_precision_backends_agree(bf16):
    """The two adapters run the same bfloat16 modules: their logits agree (measured: equal)."""
    a = bf16["transformer_lens"].run(FACT).logits
    b = bf16["nnsight"].run(FACT).logits
    gap = (a.float() - b.float()).abs().max().item()
    print(f"bfloat16 TL vs nnsight max |logit gap| {gap:.2e}")
    assert gap < 1e-4


def test_auto_device_is_cpu_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto picks it (covered by the GPU test)")
    backend = load_backend(ModelRequest("tiny-random-llama", device="auto"))
    assert backend.info.device == "cpu"


def test_cuda_without_a_gpu_is_one_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelSpecError) as err:
        load_backend(ModelRequest("tiny-random-llama", device="cuda"))
    assert str(err.value) == ("--interp-device cuda, but torch sees no CUDA device here: use "
                              "--interp-device cpu (or auto)")


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_gpu_results_match_cpu(load_backend, backend):
    cpu = InterpModel(load_backend("smollm2-135m", backend))
    gpu = InterpModel(load_backend("smollm2-135m", backend, device="cuda"))
    assert gpu.info.device.startswith("cuda")
    np.testing.assert_allclose(gpu.logit_lens(FACT).logits, cpu.logit_lens(FACT).logits,
                               atol=1e-3)
    assert gpu.logit_diff(IOI[0], " Mary", " John") == pytest.approx(
        cpu.logit_diff(IOI[0], " Mary", " John"), abs=1e-3)


def _attention(score: float) -> AttentionResult:
    scores = {k: np.full((1, 1), score) for k in ("previous_token", "first_token", "self",
                                                  "entropy", "induction")}
    return AttentionResult(model="m", prompt=None, str_tokens=("a",), scores=scores,
                           labels=attention_labels(scores), patterns=np.zeros((1, 1, 1, 1)))


def test_tolerances_widen_with_the_coarsest_dtype():
    assert [dtype_scale(d) for d in ("float32", "float16", "bfloat16")] == [1, 2, 4]
    stored = render(_attention(0.30))
    assert "dtype" not in parse(stored)[0]  # float32 snapshots are unchanged
    moved = render(_attention(0.35), "bfloat16")  # 2.5x the float32 prob tolerance
    assert parse(moved)[0]["dtype"] == "bfloat16"
    extension = InterpSnapshotExtension()
    assert not extension.matches(serialized_data=render(_attention(0.35)), snapshot_data=stored)
    assert extension.matches(serialized_data=moved, snapshot_data=stored)
    assert extension.matches(serialized_data=render(_attention(0.35)),
                             snapshot_data=render(_attention(0.30), "bfloat16"))
    far = render(_attention(0.50), "bfloat16")
    assert list(extension.diff_lines(far, stored))[:2] == [
        "attention of m changed beyond the noise floor (tolerances prob 0.08, logit 0.4, "
        "recovery 0.2; x4 for "
        "bfloat16), 4 changes, largest first:",  # entropy (nats) is within the logit one
        "  L0H0: induction 0.30 -> 0.50 (label mixed -> induction)",  # on the score it names
    ]


def test_bfloat16_run_passes_float32_snapshots_within_scaled_tolerance(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_attention(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.attention()

        def test_lens(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.logit_lens("The cat sat on the")
        """)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=2)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    text = stored.read_bytes()
    result = pytester.runpytest("--interp-dtype=bfloat16")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*dtype bfloat16*", "2 snapshots passed."])
    assert stored.read_bytes() == text


def test_xdist_workers_take_a_gpu_each():
    """With several GPUs, worker gwN holds its models on GPU N mod count; one GPU, no xdist or
    another device: the device as asked."""
    from pytest_interp.backends.load import worker_device

    assert [worker_device("cuda", f"gw{i}", 4) for i in range(6)] == [
        "cuda:0", "cuda:1", "cuda:2", "cuda:3", "cuda:0", "cuda:1"]
    assert worker_device("cuda", "gw3", 1) == "cuda"
    assert worker_device("cuda", None, 4) == "cuda"
    assert worker_device("cuda", "master", 4) == "cuda"
    assert worker_device("cpu", "gw1", 4) == "cpu"

