"""Model objects a conftest supplies (pytest_interp_load_model), and models accelerate spreads
over devices: the probes run on them as on a loaded spec."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_interp.backends.load import load_backend as build
from pytest_interp.errors import ModelSpecError
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

CLEAN, CORRUPTED = "The cat sat on the", "The dog sat on the"

HOOK = """
import pytest

from pytest_interp.backends.loading import load_hf, resolve_spec


def pytest_interp_load_model(spec, request):
    if spec != "mine":
        return None
    loaded = load_hf(resolve_spec("tiny-random-llama"))  # a model object of the user's
    if KIND == "bridge":
        from transformer_lens.model_bridge import TransformerBridge

        return TransformerBridge.boot_transformers("mine", hf_model=loaded.model,
                                                   tokenizer=loaded.tokenizer)
    if KIND == "nnsight":
        from nnsight import LanguageModel

        return LanguageModel(loaded.model, tokenizer=loaded.tokenizer)
    if KIND == "model only":
        return loaded.model
    return loaded.model, loaded.tokenizer
"""

SUITE = """
import pytest

pytestmark = pytest.mark.interp_model("mine")


@pytest.mark.lens("The cat sat on the", " on", layer=-1, top_k=50000)
def test_marker():
    pass


def test_fixture(interp_model):
    reference = float(REFERENCE)
    value = interp_model.logit_diff("The cat sat on the", " mat", " rug")
    assert abs(value - reference) < 1e-4, (value, reference)
    assert interp_model.info.name == "mine"
"""


@pytest.fixture(scope="module")
def reference(load_backend) -> float:
    return InterpModel(load_backend("tiny-random-llama")).logit_diff(CLEAN, " mat", " rug")


@pytest.mark.parametrize(("kind", "backend"), [
    ("pair", "transformer_lens"), ("pair", "nnsight"), ("bridge", "transformer_lens"),
    ("nnsight", "nnsight"), ("nnsight", "transformer_lens"),
])
def test_a_conftest_model_object_runs_the_marker_suite(pytester, reference, kind, backend):
    pytester.makeconftest(f"KIND = {kind!r}\n" + HOOK)
    pytester.makepyfile(test_suite=SUITE.replace("REFERENCE", repr(reference)))
    ini(pytester, model="tiny-random-gpt2")  # the session's model; the tests pin "mine"
    # A bridge's tokenizer is the one TransformerLens configured: it prepends BOS
    bos = ["--interp-prepend-bos=false"] if kind == "bridge" else []
    pytester.runpytest(f"--interp-backend={backend}", *bos).assert_outcomes(passed=2)


@pytest.mark.parametrize(("kind", "backend", "message"), [
    ("model only", "transformer_lens",
     "model spec 'mine': pytest_interp_load_model returned a LlamaForCausalLM: return (model, "
     "tokenizer), a TransformerLens TransformerBridge or an nnsight LanguageModel"),
    ("bridge", "nnsight",
     "model spec 'mine': pytest_interp_load_model returned a TransformerLens bridge for the "
     "nnsight backend: return (model, tokenizer) instead"),
])
def test_a_wrong_model_object_fails_its_tests_in_one_line(pytester, kind, backend, message):
    pytester.makeconftest(f"KIND = {kind!r}\n" + HOOK)
    pytester.makepyfile(test_suite=SUITE.replace("REFERENCE", "0"))
    result = pytester.runpytest(f"--interp-backend={backend}")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([f"pytest-interp: {message}"])


def test_an_unknown_spec_with_no_hook_answer_fails_at_the_test(pytester):
    pytester.makeconftest("KIND = 'pair'\n" + HOOK)
    pytester.makepyfile(test_x="""
        import pytest

        @pytest.mark.interp_model("not-mine")
        def test_x(interp_model):
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["pytest-interp: unknown model spec 'not-mine': *"])


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, load_raw_hf):
    folder = tmp_path_factory.mktemp("tiny")
    raw = load_raw_hf("tiny-random-llama")
    raw.model.save_pretrained(folder)
    raw.tokenizer.save_pretrained(folder)
    return folder, raw.tokenizer


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_a_model_spread_over_cpu_and_disk_gives_the_same_results(backend, saved_tiny, tmp_path,
                                                                  load_backend):
    """accelerate's device_map: layers 1 and 2 offloaded to disk (meta tensors in memory)."""
    from transformers import AutoModelForCausalLM

    folder, tokenizer = saved_tiny
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu",
                  "model.layers.0": "cpu", "model.layers.1": "disk", "model.layers.2": "disk",
                  "model.norm": "cpu", "lm_head": "cpu"}
    split = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map,
                                                 offload_folder=str(tmp_path / "offload"),
                                                 attn_implementation="eager")
    assert split.model.layers[2].mlp.down_proj.weight.is_meta
    ours = InterpModel(build(ModelRequest("split", backend), provided=(split, tokenizer)))
    whole = InterpModel(load_backend("tiny-random-llama", backend))
    np.testing.assert_allclose(ours.logit_lens(CLEAN).logits, whole.logit_lens(CLEAN).logits,
                               atol=1e-4)
    for site in ("resid_pre", "head_out", "mlp_out"):
        a = ours.activation_patching(CLEAN, CORRUPTED, answer=" mat", foil=" rug", site=site)
        b = whole.activation_patching(CLEAN, CORRUPTED, answer=" mat", foil=" rug", site=site)
        np.testing.assert_allclose(a.patched, b.patched, atol=1e-4, err_msg=site)
    assert ours.generate(CLEAN, max_new_tokens=4) == whole.generate(CLEAN, max_new_tokens=4)


def test_an_unsupported_model_object_is_refused(load_raw_hf):
    from transformers import BertConfig, BertForMaskedLM

    bert = BertForMaskedLM(BertConfig(hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=32))
    with pytest.raises(ModelSpecError, match=r"^model spec 'b': architecture BertForMaskedLM is "
                                             r"not supported: use a model of LlamaForCausalLM"):
        build(ModelRequest("b"), provided=(bert, load_raw_hf("tiny-random-llama").tokenizer))
