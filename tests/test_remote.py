"""--interp-remote: traces run on a (fake) NDIF server; the client holds no weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import pytest_interp.backends.nnsight as nnsight_backend
from pytest_interp.backends.load import load_backend
from pytest_interp.backends.loading import load_hf, resolve_spec
from pytest_interp.errors import ModelSpecError
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest

from . import fake_ndif as fake_ndif_module

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
CLEAN, CORRUPTED = "The cat sat on the", "The dog sat on the"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    """tiny-random-llama saved as a Hugging Face directory (what the fake server serves)."""
    directory = tmp_path_factory.mktemp("tiny-remote")
    loaded = load_hf(resolve_spec("tiny-random-llama"))
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def fake_ndif(tiny_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(nnsight_backend.BACKEND_ENV, "tests.fake_ndif:from_env")
        patch.setenv(fake_ndif_module.MODEL_ENV, str(tiny_dir))
        yield fake_ndif_module.from_env(None)
        fake_ndif_module.close_all()


@pytest.fixture(scope="module")
def backends(tiny_dir, fake_ndif):
    return (load_backend(ModelRequest(str(tiny_dir), "nnsight", remote=True)),
            load_backend(ModelRequest(str(tiny_dir), "nnsight")))


@pytest.fixture
def remote_and_local(backends):
    """Fresh memos per test, so every probe's runs reach the server."""
    return InterpModel(backends[0]), InterpModel(backends[1])


PROBES = {
    "logit lens": lambda m: m.logit_lens(CLEAN, positions=None).logits,
    "logit diff": lambda m: m.logit_diff(CLEAN, " mat", " rug"),
    "patching resid_pre": lambda m: m.activation_patching(
        CLEAN, CORRUPTED, answer=" mat", foil=" rug").recovery,
    "patching head_out": lambda m: m.activation_patching(
        CLEAN, CORRUPTED, answer=" mat", foil=" rug", site="head_out",
        per_position=False).recovery,
    "patchscope": lambda m: m.patchscope("The cat sat", " cat", layer=[0, 1, 2], expected="cat",
                                         max_new_tokens=3).expected_prob,
    "steering": lambda m: m.steer(CLEAN, m.steering_vector("I love", "I hate", layer=1),
                                  layer=1, coef=[0, 2], target=" mat", foil=" rug",
                                  max_new_tokens=3).values,
    "attention": lambda m: m.attention().scores["induction"],
}


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.slow
def test_every_probe_runs_remotely_and_equals_the_local_run(remote_and_local, fake_ndif, probe):
    remote, local = remote_and_local
    assert {p.device.type for p in remote.backend._hf.parameters()} == {"meta"}
    before = fake_ndif.requests
    got = np.asarray(PROBES[probe](remote), dtype=float)
    assert fake_ndif.requests > before  # the work went to the server
    want = np.asarray(PROBES[probe](local), dtype=float)
    np.testing.assert_allclose(got, want, atol=1e-5, equal_nan=True)


def test_generation_and_patchscope_texts_equal(remote_and_local):
    remote, local = remote_and_local
    assert remote.generate(CLEAN, max_new_tokens=5) == local.generate(CLEAN, max_new_tokens=5)
    texts = [m.patchscope("The cat sat", " cat", layer=[0, 1]).continuations
             for m in (remote, local)]
    assert texts[0] == texts[1]


def test_a_remote_hub_id_needs_its_config_here(monkeypatch):
    """Only the config and tokenizer load locally, through the HF cache (offline here)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert resolve_spec("meta-llama/Llama-3.1-70B", remote=True).kind == "hub"
    with pytest.raises(ModelSpecError) as err:
        load_backend(ModelRequest("no-such-org/no-such-model", "nnsight", remote=True))
    assert str(err.value) == (
        "model 'no-such-org/no-such-model' at revision 'main' is not in the Hugging Face cache "
        "and HF_HUB_OFFLINE is set: fetch it once with `hf download no-such-org/no-such-model` "
        "(or check the id, the revision and HF_TOKEN)"
    )


def test_remote_without_a_key_fails_at_session_start(pytester, monkeypatch, tiny_dir):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--interp-remote", "--interp-backend=nnsight",
                                           f"--interp-model={tiny_dir}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line] == [
        "ERROR: pytest-interp: --interp-remote needs an NDIF API key and none is configured: "
        "set NDIF_API_KEY (get a key at https://login.ndif.us) or save one once with python -c "
        "\"import nnsight; nnsight.CONFIG.set_default_api_key('KEY')\""]


def test_remote_needs_the_nnsight_backend(pytester):
    result = pytester.runpytest("--interp-remote")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-interp: --interp-remote runs models on NDIF "
                                 "through nnsight: add --interp-backend nnsight"])


@pytest.mark.slow
def test_marker_suite_runs_against_the_fake_remote(pytester, monkeypatch, tiny_dir):
    """The whole plugin path: options, session-start checks, markers and fixtures, with the
    fake server put in place by a conftest."""
    monkeypatch.setenv("NDIF_API_KEY", "fake-key")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.setenv(nnsight_backend.BACKEND_ENV, "tests.fake_ndif:from_env")
    monkeypatch.setenv(fake_ndif_module.MODEL_ENV, str(tiny_dir))
    pytester.makeconftest("""
        from tests import fake_ndif

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"fake NDIF served {fake_ndif.close_all()} requests")
        """)
    pytester.makepyfile(test_remote_suite="""
        import pytest

        @pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" rug", min=-100)
        @pytest.mark.attention(kind="self", max_score=1)
        def test_markers():
            pass

        def test_fixture(interp_model):
            assert {p.device.type for p in interp_model.backend._hf.parameters()} == {"meta"}
            assert interp_model.logit_lens("The cat sat on the").n_layers == 3
        """)
    result = pytester.runpytest_subprocess("--interp-remote", "--interp-backend=nnsight",
                                           f"--interp-model={tiny_dir}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["interp: model *, backend nnsight, device remote (NDIF), *",
                                 "fake NDIF served * requests"])
    served = int(result.stdout.str().split("fake NDIF served ")[1].split()[0])
    assert served >= 3


def test_a_bad_backend_factory_is_one_clear_error(monkeypatch):
    monkeypatch.setenv(nnsight_backend.BACKEND_ENV, "no_such_module:make")
    with pytest.raises(ModelSpecError) as err:
        nnsight_backend.remote_backend(None)
    assert str(err.value) == (
        "$PYTEST_INTERP_NDIF_BACKEND='no_such_module:make' names no factory (No module named "
        "'no_such_module'): write it as module:callable, or unset it to use NDIF")
