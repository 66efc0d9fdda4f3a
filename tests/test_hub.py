"""Hub ids and revisions through Hugging Face's own cache, offline, on caches built here.

Each inner session is a subprocess: huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE
when it is imported, as it does for users.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest_plugins = ["pytester"]

MAIN, STEP = "a" * 40, "b" * 40  # the commits refs/main and refs/step1000 point to
PROBE = """
import os

def test_model(interp_model):
    info = interp_model.info
    logits = interp_model.run("The cat sat").logits[0, -1]
    print(f"MODEL {info.name} {info.revision} {float(logits.abs().sum()):.3f}")
    assert "HF_HUB_OFFLINE" in os.environ  # set by the test, never by pytest-interp
"""


def _save(model, tokenizer, folder: Path) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, load_raw_hf) -> Path:
    """A Hugging Face cache holding org/tiny: refs/main and refs/step1000 (layer 2's MLP
    zeroed), and org/bert whose config names an unsupported architecture."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    raw = load_raw_hf("tiny-random-llama")
    repo = root / "models--org--tiny"
    for ref, commit in (("main", MAIN), ("step1000", STEP)):
        model = raw.model
        if ref == "step1000":
            model = type(raw.model)(raw.model.config)
            model.load_state_dict(raw.model.state_dict())
            with torch.no_grad():
                model.model.layers[2].mlp.down_proj.weight.zero_()
        _save(model, raw.tokenizer, repo / "snapshots" / commit)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    huge = root / "models--org--huge" / "snapshots" / MAIN  # a header of 10^12 weights alone
    huge.mkdir(parents=True)
    shutil.copy(repo / "snapshots" / MAIN / "config.json", huge / "config.json")
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6],
                               "data_offsets": [0, 4 * 10**12]}}).encode()
    (huge / "model.safetensors").write_bytes(len(header).to_bytes(8, "little") + header)
    (root / "models--org--huge" / "refs").mkdir()
    (root / "models--org--huge" / "refs" / "main").write_text(MAIN)
    bert = root / "models--org--bert"
    (bert / "snapshots" / MAIN).mkdir(parents=True)
    (bert / "snapshots" / MAIN / "config.json").write_text(
        json.dumps({"architectures": ["BertForMaskedLM"]}))
    (bert / "refs").mkdir()
    (bert / "refs" / "main").write_text(MAIN)
    return root


@pytest.fixture
def offline(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return hub


def _model_line(result) -> list[str]:
    line = next(x for x in result.stdout.lines if "MODEL " in x)
    return line[line.index("MODEL "):].split()[1:]


@pytest.mark.slow
def test_a_revision_loads_its_own_snapshot_offline(pytester, offline):
    pytester.makepyfile(test_probe=PROBE)
    step = pytester.runpytest_subprocess("-s", "--interp-model=org/tiny@step1000")
    step.assert_outcomes(passed=1)
    step.stdout.fnmatch_lines([f"interp: model org/tiny@step1000 (commit {STEP[:12]}), *",
                               f"interp: org/tiny@step1000 rev {STEP} (LlamaForCausalLM, 3 "
                               "layers) via transformer_lens: *"])
    main = pytester.runpytest_subprocess("-s", "--interp-model=org/tiny",
                                         "--interp-backend=nnsight")
    main.assert_outcomes(passed=1)
    name, revision, logits = _model_line(main)
    assert (name, revision) == ("org/tiny", MAIN)
    assert _model_line(step)[:2] == ["org/tiny@step1000", STEP]
    assert logits != _model_line(step)[2]  # another snapshot: other weights


def test_a_missing_revision_offline_names_the_command_that_fetches_it(pytester, offline):
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("--interp-model=org/tiny@step5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.startswith("ERROR")] == [
        "ERROR: pytest-interp: model 'org/tiny' at revision 'step5' is not in the Hugging Face "
        "cache and HF_HUB_OFFLINE is set: fetch it once with `hf download org/tiny --revision "
        "step5` (or check the id, the revision and HF_TOKEN)"
    ]


def test_a_hub_model_too_large_for_memory_is_refused_before_its_weights_load(offline):
    done = subprocess.run(
        [sys.executable, "-c", "from pytest_interp.backends.loading import load_hf, "
         "resolve_spec\ntry:\n    load_hf(resolve_spec('org/huge'))\nexcept Exception as e:\n"
         "    print(type(e).__name__, e)"], capture_output=True, text=True, check=True)
    said = done.stdout.strip()
    assert said.startswith("ModelSpecError model spec 'org/huge' has 1,000,000M weights: in "
                           "float32 it needs about 4656.6 GiB of memory, and cpu has "), said
    assert said.endswith(" available: load it in less (--interp-dtype=bfloat16 halves "
                         "float32), on a larger device (--interp-device=cuda, or device_map= in "
                         "your pytest_interp_load_model), or run it remotely (--interp-remote)")


def test_online_the_weights_are_counted_from_the_hubs_metadata(monkeypatch):
    import huggingface_hub

    from pytest_interp.backends import hub
    from pytest_interp.backends.specs import resolve_spec

    ref = resolve_spec("org/big@v2")
    monkeypatch.setattr(hub, "_hub_config_path", lambda resolved: None)  # nothing cached
    monkeypatch.setattr(hub, "hub_offline", lambda: False)
    asked = []

    def metadata(repo, revision=None):
        asked.append((repo, revision))
        return type("Meta", (), {"parameter_count": {"BF16": 7 * 10**9, "F32": 10**6}})()

    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", metadata)
    assert hub.hub_elements(ref) == 7_001_000_000 and asked == [("org/big", "v2")]

    def unreachable(repo, revision=None):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "get_safetensors_metadata", unreachable)
    assert hub.hub_elements(ref) is None  # loading itself says what is wrong


def test_an_unsupported_hub_architecture_fails_before_any_weights(pytester, offline):
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess("--interp-model=org/bert")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-interp: model spec 'org/bert': architecture "
                                 "BertForMaskedLM is not supported: use a model of "
                                 "LlamaForCausalLM, GPT2LMHeadModel, MistralForCausalLM, *"])


@pytest.mark.slow
def test_no_session_sets_hf_hub_offline(pytester, monkeypatch):
    """Neither a session without models nor one that loads a model switches HF offline."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    pytester.makepyfile(test_env="""
        import os

        def test_plain():
            assert "HF_HUB_OFFLINE" not in os.environ

        def test_with_a_model(interp_model):
            interp_model.run("The cat sat")
            assert "HF_HUB_OFFLINE" not in os.environ
            assert "TRANSFORMERS_OFFLINE" not in os.environ
    """)
    pytester.runpytest_subprocess().assert_outcomes(passed=1, errors=1)  # no model: an error
    pytester.runpytest_subprocess("--interp-model=tiny-random-llama").assert_outcomes(passed=2)


def test_an_unsupported_gguf_fails_before_conversion(pytester, tmp_path, monkeypatch):
    """The architecture comes from the GGUF header; nothing is converted or cached."""
    import struct

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    gguf = tmp_path / "falcon.gguf"
    gguf.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2)
                     + text("general.name") + struct.pack("<I", 8) + text("tiny")
                     + text("general.architecture") + struct.pack("<I", 8) + text("falcon"))
    cache = tmp_path / "cache"
    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(cache))
    pytester.makepyfile(test_probe=PROBE)
    result = pytester.runpytest_subprocess(f"--interp-model={gguf}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-interp: model spec '{gguf}': GGUF architecture "
                                 "'falcon' is not supported: use a GGUF file of llama, gpt2, *"])
    assert not cache.exists() or not any(cache.iterdir())
    shutil.rmtree(cache, ignore_errors=True)


def test_a_snapshot_missing_a_shard_is_not_counted_from_the_cache(tmp_path):
    from pytest_interp.backends.hub import _every_shard_cached

    assert _every_shard_cached(tmp_path)  # one file, no index
    index = tmp_path / "model.safetensors.index.json"
    index.write_text("{not json")
    assert not _every_shard_cached(tmp_path)
    index.write_text(json.dumps({"weight_map": {"a": "1.safetensors", "b": "2.safetensors"}}))
    (tmp_path / "1.safetensors").write_bytes(b"")
    assert not _every_shard_cached(tmp_path)  # ask the hub instead
    (tmp_path / "2.safetensors").write_bytes(b"")
    assert _every_shard_cached(tmp_path)
