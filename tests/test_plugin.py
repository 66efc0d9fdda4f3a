"""The pytest surface: options, ini keys, markers, fixtures, header, errors (pytester)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

WHAT = ("pass an alias (smollm2-135m, gemma3-270m, tiny-random-<family>), a local Hugging "
        "Face directory (config.json + *.safetensors), a .gguf file or a hub id "
        "org/name[@revision]")


def test_options_are_listed_in_help(pytester):
    result = pytester.runpytest("--help")
    for flag in ("--interp-model=SPEC", "--interp-backend=NAME", "--interp-device=NAME",
                 "--interp-dtype=NAME", "--interp-prepend-bos=BOOL", "--interp-memory=SIZE",
                 "--interp-baseline=SPEC"):
        result.stdout.fnmatch_lines([f"*{flag}*"])
    result.stdout.fnmatch_lines(["  interp_model (args):  model specs (whitespace-separated*"])


def test_markers_have_one_line_usage(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([
        "@pytest.mark.interp_model(spec, *, backend=None, device=None, dtype=None, "
        "prepend_bos=None): run this test (class, module) on another model or backend; "
        "spec is an alias, a local HF directory or a .gguf file."
    ])


def test_header_names_model_backend_and_versions(pytester):
    ini(pytester, model="tiny-random-llama", backend="nnsight")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([
        "interp: model tiny-random-llama, backend nnsight, device cpu, dtype float32, "
        "prepend_bos auto, memo 2.00 GiB, threads torch default, seed 0, deterministic true",
        "interp libraries: torch 2.*, transformers *, transformer-lens *, nnsight *, syrupy *",
    ])


def test_unknown_spec_fails_at_session_start_in_one_line(pytester):
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--interp-model", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line] == [
        f"ERROR: pytest-interp: unknown model spec 'nope': {WHAT}"
    ]


def test_bad_backend_choice_is_a_usage_error(pytester):
    result = pytester.runpytest("--interp-backend", "jax")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "*: error: argument --interp-backend: invalid choice: 'jax' (choose from "
        "'transformer_lens', 'nnsight')"
    ])
    ini(pytester, backend="jax")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: *: config option 'interp_backend' expects one of 'transformer_lens' | "
        "'nnsight', got 'jax'"
    ])


def test_bad_memory_size_is_a_usage_error(pytester):
    ini(pytester, memory="lots")
    result = pytester.runpytest()
    result.stderr.fnmatch_lines([
        "ERROR: pytest-interp: interp_memory 'lots' is not a size: write it like 2GiB, "
        "512MiB or 1000000"
    ])


def test_marker_with_unknown_keyword_is_a_collection_error(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.interp_model("tiny-random-llama", backnd="nnsight")
        def test_x(interp_model):
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "*ERROR collecting test_m.py*",
        "test_m.py::test_x: @pytest.mark.interp_model: unknown keyword 'backnd' (did you mean "
        "'backend'?); usage: @pytest.mark.interp_model(spec, *, backend=None, device=None, "
        "dtype=None, prepend_bos=None)",
    ])


def test_marker_with_bad_spec_is_a_collection_error(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        pytestmark = pytest.mark.interp_model("./no-such-model")

        def test_x(interp_model):
            pass
    """)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([
        "test_m.py::test_x: @pytest.mark.interp_model: model spec './no-such-model': no such "
        f"file or directory: {WHAT}",
    ])


def test_marker_with_bad_dtype_is_a_collection_error(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.interp_model("tiny-random-llama", dtype="int8")
        def test_x(interp_model):
            pass
    """)
    result = pytester.runpytest()
    result.stdout.fnmatch_lines([
        "test_m.py::test_x: @pytest.mark.interp_model: dtype='int8' is not one of: float32, "
        "bfloat16, float16",
    ])


def test_no_model_configured_fails_the_test_in_one_line(pytester):
    pytester.makepyfile(test_m="def test_x(interp_model): pass")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*_ ERROR at setup of test_x _*",
        "pytest-interp: no model given: pass --interp-model SPEC, set interp_model in the "
        "ini file, or mark the test with @pytest.mark.interp_model('SPEC')",
    ])
    assert "Traceback" not in result.stdout.str()


def test_fixture_loads_the_configured_model_once_per_session(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        seen = []

        @pytest.mark.parametrize("i", range(3))
        def test_same_instance(interp_model, i):
            seen.append(id(interp_model))
            assert len(set(seen)) == 1
            assert interp_model.info.name == "tiny-random-llama"
            assert interp_model.info.backend == "transformer_lens"
            assert interp_model.info.n_layers == 3
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)


def test_marker_overrides_model_and_backend_per_class_and_test(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        def test_default(interp_model):
            assert interp_model.info.architecture == "LlamaForCausalLM"

        @pytest.mark.interp_model("tiny-random-gpt2")
        class TestGPT2:
            def test_class_level(self, interp_model):
                assert interp_model.info.architecture == "GPT2LMHeadModel"
                assert interp_model.info.backend == "transformer_lens"

            @pytest.mark.interp_model("tiny-random-gpt2", backend="nnsight")
            def test_closest_wins(self, interp_model):
                assert interp_model.info.backend == "nnsight"
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=3)


def test_cli_option_beats_ini(pytester):
    ini(pytester, model="tiny-random-llama", backend="transformer_lens")
    pytester.makepyfile(test_m="""
        def test_x(interp_model):
            assert interp_model.info.name == "tiny-random-gpt2"
            assert interp_model.info.backend == "nnsight"
    """)
    result = pytester.runpytest("--interp-model", "tiny-random-gpt2", "--interp-backend",
                                "nnsight")
    result.assert_outcomes(passed=1)


def test_interp_cache_is_memoised_and_read_only(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        PROMPT = "When Mary and John went to the store"

        def test_first(interp_cache):
            cache = interp_cache(PROMPT)
            resid = cache["resid_post", -1]
            assert resid.shape == (1, 8, 64)
            resid.zero_()
            assert cache["resid_post", -1].abs().sum() > 0
            assert cache.str_tokens[1] == " Mary"
            assert cache.logits.shape == (1, 8, 49152)

        def test_second_reuses_the_run(interp_cache, interp_model):
            cache = interp_cache(PROMPT)
            assert cache["resid_post", 2].abs().sum() > 0
            assert interp_model.memo.stats.misses == 1
            assert interp_model.memo.stats.hits == 1
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "interp: tiny-random-llama rev tiny-random-llama-seed0-v1 (LlamaForCausalLM, 3 layers) "
        "via transformer_lens: 1 forward pass, 1 result reused, * MiB held"
    ])


def test_load_failure_is_reported_once_per_test_without_traceback(pytester, tmp_path):
    import struct

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    bad = tmp_path / "cut.gguf"  # a llama header, and nothing else
    bad.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + text("general.architecture")
                    + struct.pack("<I", 8) + text("llama"))
    pytester.makepyfile(test_m="""
        def test_a(interp_model): pass
        def test_b(interp_model): pass
    """)
    result = pytester.runpytest("--interp-model", str(bad))
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "*_ ERROR at setup of test_a _*",
        f"pytest-interp: model spec '{bad}': could not read {bad} (*): pass a GGUF file of a "
        "supported architecture (LlamaForCausalLM, GPT2LMHeadModel, *)",
        "*_ ERROR at setup of test_b _*",
    ])
    assert "Traceback" not in result.stdout.str() and "hidden" not in result.stdout.str()
    assert "During handling" not in result.stdout.str()


def test_importing_the_plugin_does_not_import_torch():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pytest_interp.plugin"],
        capture_output=True, text=True, check=True,
    )
    assert "pytest_interp.plugin" in out.stderr
    assert "torch" not in out.stderr


def test_unrelated_pytest_run_does_not_load_torch(pytester):
    pytester.makepyfile(test_m="""
        import sys

        def test_no_torch():
            assert "torch" not in sys.modules
            assert "pytest_interp.plugin" in sys.modules
            # nothing that loads models (transformers' side) for a project that does not use us
            assert "pytest_interp.backends.loading" not in sys.modules
    """)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_one_model_per_xdist_worker(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import os

        import pytest

        @pytest.mark.parametrize("i", range(6))
        def test_x(interp_model, i):
            assert os.environ.get("PYTEST_XDIST_WORKER", "").startswith("gw")
    """)
    pytester.makeconftest("""
        import pytest

        @pytest.fixture(autouse=True)
        def _one_model_in_this_worker(request):
            from pytest_interp.plugin import POOL_KEY

            yield
            assert len(request.config.stash[POOL_KEY].loaded()) == 1
    """)
    result = pytester.runpytest_subprocess("-n", "2", "-p", "xdist")
    result.assert_outcomes(passed=6)


@pytest.mark.slow
def test_timeout_stops_a_runaway_test(pytester):
    ini(pytester, model="tiny-random-llama", timeout="0.5")
    pytester.makepyfile(test_m="""
        import time

        def test_runaway(interp_model):
            while True:
                interp_model.backend.run(interp_model.tokens("The cat sat"))

        def test_quick(interp_model):
            time.sleep(0.6)  # the budget is per test: this one is past it too
    """)
    result = pytester.runpytest("--interp-timeout=5")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "pytest-interp: the test ran past --interp-timeout=5s and was stopped: restrict the "
        "sweep (layers=, positions=) or raise the limit",
    ])
    result = pytester.runpytest()  # the ini value
    result.assert_outcomes(failed=2)
    result = pytester.runpytest("--interp-timeout=soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*: error: argument --interp-timeout: 'soon' is not a number "
                                 "of seconds >= 0: pass e.g. 300, or 0 for no limit"])


def test_bad_thread_count_is_a_usage_error(pytester):
    result = pytester.runpytest("--interp-threads=many")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*: error: argument --interp-threads: 'many' is not a thread "
                                 "count: pass a whole number >= 1, or auto"])


@pytest.mark.slow
def test_xdist_workers_split_the_cores_between_them(pytester, monkeypatch):
    """Two workers with torch's default threads each would oversubscribe the cores (the
    example suite took 262 s instead of 47 s on 2 cores)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester.makepyfile("""
        import os

        def test_threads():
            import torch

            assert torch.get_num_threads() == int(os.environ["EXPECTED_THREADS"])
        """)
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setenv("EXPECTED_THREADS", str(max(1, cores // 2)))
    pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    monkeypatch.setenv("EXPECTED_THREADS", "1")
    pytester.runpytest_subprocess("--interp-threads=1").assert_outcomes(passed=1)


@pytest.mark.slow
def test_each_test_draws_the_same_numbers_in_any_order_or_worker(pytester):
    """Seeds come from the base seed and the node id, not from what ran before."""
    pytester.makepyfile(test_draws="""
        import random

        import numpy as np
        import torch

        def _draw(name):
            print(f"DRAW {name} {random.random():.9f} {np.random.rand():.9f} "
                  f"{torch.rand(1).item():.9f}")

        def test_a():
            _draw("a")

        def test_b():
            _draw("b")
        """)

    def draws(*args):
        result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider", *args)
        result.assert_outcomes(passed=sum(a.startswith("test_") for a in args) or 2)
        return sorted(line[line.index("DRAW"):] for line in result.stdout.lines if "DRAW" in line)

    forward = draws("test_draws.py::test_a", "test_draws.py::test_b")
    assert draws("test_draws.py::test_b", "test_draws.py::test_a") == forward
    assert draws("test_draws.py::test_b") == [forward[1]]
    assert draws("--interp-seed=1") != forward


def test_bad_seed_is_a_usage_error(pytester):
    result = pytester.runpytest("--interp-seed=abc")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*: error: argument --interp-seed: invalid int value: 'abc'"])
