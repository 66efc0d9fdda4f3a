"""Several models in one session (a repeatable --interp-model) and --interp-baseline."""

from __future__ import annotations

import pytest

from pytest_interp.errors import InterpError
from pytest_interp.plugin import model_ids, ordered

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

SUITE = """
    import pytest

    def test_plain():
        pass

    def test_info(interp_model):
        assert interp_model.info.n_layers == 3

    @pytest.mark.attention(kind="induction", max_score=0.5)
    def test_marker():
        pass

    @pytest.mark.interp_model("tiny-random-qwen2")
    def test_pinned(interp_model):
        pass
"""

COLLECTED = [
    "test_m.py::test_plain",
    "test_m.py::test_info[[]tiny-random-llama]",
    "test_m.py::test_marker[[]tiny-random-llama]",
    "test_m.py::test_info[[]tiny-random-gpt2]",
    "test_m.py::test_marker[[]tiny-random-gpt2]",
    "test_m.py::test_pinned",
]

# A conftest that logs every model load (and lets the plugin load it).
LOG_LOADS = """
    import os

    def pytest_interp_load_model(spec, request):
        with open(os.path.join(os.environ["LOADS"], "loads.txt"), "a") as log:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            log.write(f"{worker} {spec} {request.perturbation}\\n")
        return None
"""


def test_tests_that_use_a_model_run_on_each_model_in_order(pytester):
    pytester.makepyfile(test_m=SUITE)
    result = pytester.runpytest("--interp-model=tiny-random-llama",
                                "--interp-model=tiny-random-gpt2", "-v")
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines([
        "interp: models tiny-random-llama, tiny-random-gpt2 (each test that uses a model runs "
        "on each), backend transformer_lens, *",
        *(f"{name} PASSED*" for name in COLLECTED),
    ])


def test_the_ini_key_takes_a_list(pytester):
    ini(pytester, model="tiny-random-llama tiny-random-gpt2")
    pytester.makepyfile(test_m=SUITE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines([*COLLECTED, "6 tests collected*"])


def test_one_model_keeps_the_test_ids(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_m.py::test_plain", "test_m.py::test_info",
                                 "test_m.py::test_marker", "test_m.py::test_pinned",
                                 "4 tests collected*"])


def test_each_model_loads_once_and_is_released_after_its_tests(pytester, monkeypatch):
    monkeypatch.setenv("LOADS", str(pytester.path))
    pytester.makeconftest(LOG_LOADS)
    pytester.makepyfile(test_m=SUITE, test_n="""
        def test_other(interp_model):
            pass
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama",
                                "--interp-model=tiny-random-gpt2")
    result.assert_outcomes(passed=8)
    assert (pytester.path / "loads.txt").read_text().splitlines() == [
        "main tiny-random-llama None", "main tiny-random-gpt2 None",
        "main tiny-random-qwen2 None"]
    result.stdout.fnmatch_lines([
        "interp: tiny-random-llama rev * via transformer_lens: 1 forward pass, 0 results "
        "reused, released after its tests",
        "interp: tiny-random-gpt2 rev * via transformer_lens: 1 forward pass, 0 results reused, "
        "*MiB held",
    ])


# A conftest that hands over each model and keeps a weak reference to it.
WEAK_MODELS = """
    import weakref

    from pytest_interp.backends.loading import load_hf, resolve_spec

    MODELS = {}

    def pytest_interp_load_model(spec, request):
        loaded = load_hf(resolve_spec(spec))
        MODELS[spec] = weakref.ref(loaded.model)
        return loaded.model, loaded.tokenizer
"""


@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_a_released_model_is_freed_while_its_results_stay_in_the_report(pytester, backend):
    pytester.makeconftest(WEAK_MODELS)
    pytester.makepyfile(test_m="""
        import gc

        from conftest import MODELS

        def test_results(interp_model):
            prompt = "The capital of France is"
            interp_model.lens(prompt)
            interp_model.activation_patching(prompt, "The capital of Spain is",
                                             answer=" Paris", foil=" Madrid")
            interp_model.steer(prompt, interp_model.steering_vector(" love", " hate", layer=1),
                               layer=1)
            gc.collect()
            alive = sorted(spec for spec, ref in MODELS.items() if ref() is not None)
            assert alive == [interp_model.info.name]
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama", f"--interp-backend={backend}",
                                "--interp-model=tiny-random-gpt2", "--interp-report=r.html")
    result.assert_outcomes(passed=2)
    report = (pytester.path / "r.html").read_text()
    for figure in ("logit lens on", "resid_pre patching recovery", "steering at"):  # both models
        assert report.count(f"<h4>{figure}") == 2, figure


FAKE_GPUS = """
    import os

    import torch

    from pytest_interp.backends import loading

    torch.cuda.is_available = lambda: True  # two GPUs, as far as the plugin can tell
    torch.cuda.device_count = lambda: 2
    real_load = loading.load_hf

    def load_hf(resolved, device="cpu", **kwargs):
        with open(os.path.join(os.environ["LOADS"], "loads.txt"), "a") as log:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            log.write(f"{worker} {resolved.spec} {device}\\n")
        return real_load(resolved, device="cpu", **kwargs)  # the weights stay where they can

    loading.load_hf = load_hf
"""


@pytest.mark.slow
def test_under_xdist_each_model_of_a_series_loads_once_on_its_workers_gpu(pytester,
                                                                         monkeypatch):
    """xdist schedules whole models (ModelScheduling): a 4-model series on 2 workers loads
    each model exactly once in all, and both workers take a share. On a machine (faked) with
    two GPUs, under --interp-device cuda, gw0 loads its models on cuda:0 and gw1 on cuda:1:
    the whole path from the options to the loader, in real workers."""
    monkeypatch.setenv("LOADS", str(pytester.path))
    pytester.makeconftest(FAKE_GPUS)
    pytester.makepyfile(test_m=SUITE)
    models = ("tiny-random-llama", "tiny-random-gpt2", "tiny-random-olmo", "tiny-random-phi3")
    result = pytester.runpytest_subprocess("-n", "2", "--interp-device=cuda",
                                           *(f"--interp-model={m}" for m in models))
    result.assert_outcomes(passed=10)  # 2 tests on each model, 2 that use none
    loads = [line.split() for line in (pytester.path / "loads.txt").read_text().splitlines()]
    # each once, in all (and qwen2 once, for the test pinned to it)
    assert sorted(spec for _, spec, _ in loads) == sorted([*models, "tiny-random-qwen2"])
    assert {(worker, device) for worker, _, device in loads} == {("gw0", "cuda:0"),
                                                                 ("gw1", "cuda:1")}


def test_a_test_ids_scope_under_xdist_is_its_series_model():
    from pytest_interp.plugin.series import scope_of

    ids = ["step_1", "step_10", "tiny-random-llama"]
    assert scope_of("t.py::test_a[step_10]", ids) == "model:step_10"
    assert scope_of("t.py::test_a[3-step_1]", ids) == "model:step_1"
    assert scope_of("t.py::C::test_b[tiny-random-llama-x]", ids) == "model:tiny-random-llama"
    assert scope_of("t.py::test_c", ids) == "t.py"


def test_a_pinned_class_is_not_multiplied(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.interp_model("tiny-random-qwen2")
        class TestPinned:
            def test_a(self, interp_model):
                assert interp_model.info.name == "tiny-random-qwen2"
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama",
                                "--interp-model=tiny-random-gpt2", "-q")
    result.assert_outcomes(passed=1)


def test_a_bad_second_model_fails_at_session_start(pytester):
    pytester.makepyfile(test_m=SUITE)
    result = pytester.runpytest("--interp-model=tiny-random-llama",
                                f"--interp-model={pytester.path / 'nope'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-interp: model spec '{pytester.path / 'nope'}'*"])


def test_models_are_ordered_as_given():
    assert ordered(["ckpt/step_100", "ckpt/step_50", "ckpt/step_100", " "]) == \
        ("ckpt/step_100", "ckpt/step_50")
    assert ordered(["EleutherAI/pythia-70m@step3000", "EleutherAI/pythia-70m@step1000"]) == \
        ("EleutherAI/pythia-70m@step3000", "EleutherAI/pythia-70m@step1000")
    assert ordered(["release", "ckpt/step_50"]) == ("release", "ckpt/step_50")


def test_model_ids_are_short_and_distinct():
    assert model_ids(("smollm2-135m", "EleutherAI/pythia-70m@step1000", "/m/gemma.gguf",
                      "/runs/a/step_00200/")) == \
        ["smollm2-135m", "pythia-70m@step1000", "gemma", "step_00200"]
    assert model_ids(("/runs/a/step_00200", "/runs/b/step_00200")) == \
        ["a-step_00200", "b-step_00200"]


# ---------------------------------------------------------------------------
# --interp-baseline

BASELINE_SUITE = """
    def test_attention(interp_model):
        interp_model.attention()

    def test_lens(interp_model):
        interp_model.lens("The capital of France is")
"""

ATTENTION_CHANGED = [
    "attention of perturbed changed from baseline tiny-random-llama beyond the noise floor "
    "(tolerances prob 0.02, logit 0.1, recovery 0.05), 4 changes, largest first:",
    "  L1H2: entropy 2.70 -> 0.00",
    "  L1H2: induction 0.03 -> 0.10",
    "  L1H2: first_token 0.09 -> 0.05",
    "  L1H2: self 0.08 -> 0.05",
]


@pytest.fixture
def copies(load_raw_hf, tmp_path_factory):
    """tiny-random-llama re-saved as is (``same``) and with one head made sharp
    (``perturbed``)."""
    from .test_snapshot import _perturbed_copy

    root = tmp_path_factory.mktemp("copies")
    raw = load_raw_hf("tiny-random-llama")
    raw.model.save_pretrained(root / "same")
    raw.tokenizer.save_pretrained(root / "same")
    _perturbed_copy(load_raw_hf, root / "perturbed", layer=1, head=2)
    return root


def test_baseline_names_what_changed_in_model_terms(pytester, copies):
    pytester.makepyfile(test_m=BASELINE_SUITE)
    result = pytester.runpytest(f"--interp-model={copies / 'perturbed'}",
                                "--interp-baseline=tiny-random-llama")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        f"interp: model {copies / 'perturbed'}, baseline tiny-random-llama, backend *",
        "*_ test_attention _*", *ATTENTION_CHANGED,
        "interp: tiny-random-llama rev * via nnsight: *",  # the baseline's noise floor
    ])
    # Not repeated within the failure (the short summary, which pytest prints whole
    # when CI is set, is left out of the count).
    failure = result.stdout.str().split("short test summary info")[0]
    assert failure.count("L1H2: entropy 2.70 -> 0.00") == 1


@pytest.mark.slow
def test_baseline_gives_the_snapshot_diff(pytester, copies):
    """The baseline's changes are the ones a snapshot written on the baseline gives."""
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_attention(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.attention()
    """)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    snapshot = pytester.runpytest(f"--interp-model={copies / 'perturbed'}")
    snapshot.assert_outcomes(failed=1)
    snapshot.stdout.fnmatch_lines([
        "*attention of perturbed changed beyond the noise floor (tolerances prob 0.02, logit "
        "0.1, recovery 0.05), 4 changes, largest first:",
        *(f"*{line}" for line in ATTENTION_CHANGED[1:]),
    ])
    baseline = pytester.runpytest(f"--interp-model={copies / 'perturbed'}",
                                  "--interp-baseline=tiny-random-llama", "--snapshot-update")
    baseline.assert_outcomes(failed=1)
    baseline.stdout.fnmatch_lines(ATTENTION_CHANGED)


def test_baseline_passes_on_a_resaved_copy_and_on_itself(pytester, copies):
    pytester.makepyfile(test_m=BASELINE_SUITE)
    pytester.runpytest(f"--interp-model={copies / 'same'}",
                       "--interp-baseline=tiny-random-llama").assert_outcomes(passed=2)
    pytester.runpytest("--interp-model=tiny-random-llama",
                       "--interp-baseline=tiny-random-llama").assert_outcomes(passed=2)


def test_baseline_compares_each_model_of_a_series(pytester, copies):
    pytester.makepyfile(test_m=BASELINE_SUITE)
    result = pytester.runpytest(f"--interp-model={copies / 'same'}",
                                f"--interp-model={copies / 'perturbed'}",
                                "--interp-baseline=tiny-random-llama", "-q")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_m.py::test_attention[[]perturbed]*"])


def test_a_bad_baseline_fails_at_session_start(pytester):
    pytester.makepyfile(test_m=BASELINE_SUITE)
    result = pytester.runpytest("--interp-model=tiny-random-llama",
                                f"--interp-baseline={pytester.path / 'nope'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: pytest-interp: model spec '{pytester.path / 'nope'}'*"])


def test_a_glob_names_a_series_of_checkpoints(tmp_path, monkeypatch):
    for step in (100, 50, 0):
        (tmp_path / "ckpt" / f"step_{step}").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert ordered(["ckpt/step_*"]) == ("ckpt/step_0", "ckpt/step_50", "ckpt/step_100")
    with pytest.raises(InterpError, match=r"glob 'ckpt/none_\*' matches no file or directory"):
        ordered(["ckpt/none_*"])  # tests/test_checkpoint_workflow.py has the whole line
