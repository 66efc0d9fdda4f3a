"""Issue 27, the checkpoint workflow: series order and globs, bisect's sessions and report,
the summary's counts, init's timings, dataset key hints, spec suggestions, the report's
snapshot diff, ablation provenance and ``load_hf``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_interp import bisect, init, load_hf
from pytest_interp.backends.loading import resolve_spec
from pytest_interp.errors import InterpError, ModelSpecError
from pytest_interp.plugin import ordered
from pytest_interp.record import SnapshotDiff
from pytest_interp.report.figures import snapshot_figure

from .pytester_helpers import ini
from .test_docs import doc_files

pytest_plugins = ["pytester"]


# -- 1. series order, and a glob that matches nothing -------------------------------------

def test_an_explicit_order_is_kept_and_a_globs_matches_sort_by_number(tmp_path, monkeypatch):
    for name in ("step_100", "step_50", "step_0", "final", "best"):
        (tmp_path / "ckpt" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert ordered(["ckpt/step_100", "ckpt/step_50", "ckpt/step_100", " "]) == \
        ("ckpt/step_100", "ckpt/step_50")
    assert ordered(["release", "ckpt/step_50"]) == ("release", "ckpt/step_50")
    assert ordered(["ckpt/step_*"]) == ("ckpt/step_0", "ckpt/step_50", "ckpt/step_100")
    assert ordered(["ckpt/step_100", "ckpt/step_*"]) == \
        ("ckpt/step_100", "ckpt/step_0", "ckpt/step_50")
    assert ordered(["ckpt/*"]) == ("ckpt/best", "ckpt/final", "ckpt/step_0", "ckpt/step_100",
                                   "ckpt/step_50")  # not every one numbered: by name


def test_a_glob_that_matches_nothing_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelSpecError) as info:
        ordered(["ckpt/step_*"])
    assert str(info.value) == (
        "glob 'ckpt/step_*' matches no file or directory: check the path (relative to the "
        f"directory pytest runs in, {tmp_path})")
    with pytest.raises(ModelSpecError) as info:
        ordered([f"{tmp_path}/none_*"])
    assert str(info.value) == f"glob '{tmp_path}/none_*' matches no file or directory: check " \
        "the path"


def test_a_glob_that_matches_nothing_is_a_usage_error(pytester):
    pytester.makepyfile(test_m="def test_x(): pass")
    result = pytester.runpytest("--interp-model=ckpt/step_*")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-interp: glob 'ckpt/step_*' matches no file or directory: check the path "
        f"(relative to the directory pytest runs in, {pytester.path})"])
    assert "no such file" not in result.stderr.str()


def test_bisect_says_a_glob_matches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert bisect.main(["--models", "ckpt/step_*", "--", "-q"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "bisect: glob 'ckpt/step_*' matches no file or directory: check the path (relative to "
        f"the directory pytest runs in, {tmp_path})"]


# -- 2. bisect's sessions write no report unless asked --------------------------------------

BISECT_SUITE = """
    def test_not_gpt2(request):
        assert "gpt2" not in request.config.getoption("interp_model")[0]
"""


def _bisect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_interp", "bisect", "--models",
                           "tiny-random-llama", "tiny-random-gpt2", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_bisect_sessions_write_no_report_unless_asked(pytester):
    ini(pytester, report="suite-report.html")
    pytester.makepyfile(test_m=BISECT_SUITE)
    done = _bisect(pytester.path, "--", "-p", "no:cacheprovider")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith(
        "bisect: first model that fails: tiny-random-gpt2 (tiny-random-llama passes)")
    assert not (pytester.path / "suite-report.html").exists()
    asked = _bisect(pytester.path, "--report", "bisect.html")
    assert asked.returncode == 0, asked.stderr
    assert not (pytester.path / "suite-report.html").exists()
    assert "pytest-interp report" in (pytester.path / "bisect.html").read_text()


def test_an_empty_interp_report_option_writes_none(pytester):
    ini(pytester, report="suite-report.html")
    pytester.makepyfile(test_m="def test_x(): pass")
    result = pytester.runpytest("--interp-report=")
    result.assert_outcomes(passed=1)
    assert "report written" not in result.stdout.str()
    assert not (pytester.path / "suite-report.html").exists()


# -- 3. the summary counts forward passes and reused results ----------------------------------

def test_the_summary_counts_forward_passes_and_reused_results(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        PROMPTS = [{"prompt": "The cat sat on the", "answer": " mat"},
                   {"prompt": "The dog ran to the", "answer": " park"}]

        @pytest.mark.ablation(ablate=["L0H1"], max_drop=100, prompts=PROMPTS)
        def test_marker():
            pass

        def test_same_ablation_again(interp_model):
            first = interp_model.ablate("The cat sat on the", answer=" mat", ablate=["L0H1"])
            again = interp_model.ablate("The cat sat on the", answer=" mat", ablate=["L0H1"])
            assert again is first
            assert interp_model.memo.stats.passes == 6
            assert interp_model.memo.stats.reused == 1
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    # each ablation (the marker's batch of 2 rows, then ablate()) is 3 batched passes, none
    # through the run memo: the reference for the means, clean, ablated; then ablate() again
    result.stdout.fnmatch_lines(["interp: tiny-random-llama rev * via transformer_lens: "
                                 "6 forward passes, 1 result reused, * MiB held"])


# -- 4. init's timings --------------------------------------------------------------------

def test_init_prints_durations_with_sensible_precision():
    assert [init.duration(s) for s in (0.01, 0.42, 3.14, 9.96, 42.4)] == \
        ["<0.1 s", "0.4 s", "3.1 s", "10 s", "42 s"]


# -- 5. a dataset row's key named another way ---------------------------------------------

def test_a_row_keyed_target_gets_a_rename_hint(pytester):
    (pytester.path / "facts.jsonl").write_text(
        json.dumps({"prompt": "The capital of France is", "target": " Paris"}) + "\n")
    marker = "@pytest.mark.next_token(prompts={}, stat='fraction', min_fraction=1)"
    for name, prompts in (("x", "'facts.jsonl'"),
                          ("typo", "[{'prompt': 'The cat sat on the', 'expct': ' mat'}]"),
                          ("nothing_like_it",
                           "[{'prompt': 'The cat sat on the', 'other': ' mat'}]")):
        pytester.makepyfile(**{f"test_{name}": f"import pytest\n\n{marker.format(prompts)}\n"
                                               "def test_x():\n    pass\n"})
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "test_x.py::test_x: @pytest.mark.next_token: prompts row 0 ('The capital of France "
        "is') has no 'expect' (it has 'target': rename the key to 'expect', or pass expect= "
        "in the marker)"])
    result.stdout.fnmatch_lines([
        "test_typo.py::test_x: @pytest.mark.next_token: prompts row 0 ('The cat sat on the') "
        "has no 'expect' (it has 'expct': rename the key to 'expect', or pass expect= in the "
        "marker)"])
    result.stdout.fnmatch_lines([
        "test_nothing_like_it.py::test_x: @pytest.mark.next_token: prompts row 0 ('The cat "
        "sat on the') has no 'expect': give it in every row or once in the marker"])


# -- 6. did you mean, for an alias -------------------------------------------------------

@pytest.mark.parametrize(("spec", "alias"), [("smollm2-135M", "smollm2-135m"),
                                             ("SmolLM2-135m", "smollm2-135m"),
                                             ("smollm-135m", "smollm2-135m"),
                                             ("gemma3-270", "gemma3-270m")])
def test_a_near_miss_of_an_alias_suggests_it(spec, alias):
    with pytest.raises(ModelSpecError) as info:
        resolve_spec(spec)
    assert str(info.value).startswith(
        f"unknown model spec {spec!r}: did you mean {alias!r}? pass an alias (smollm2-135m, ")


def test_a_near_miss_of_a_tiny_alias_suggests_it():
    with pytest.raises(ModelSpecError) as info:
        resolve_spec("tiny-random-Llama")
    assert str(info.value).startswith("unknown model spec 'tiny-random-Llama': did you mean "
                                      "'tiny-random-llama'? the tiny random models are ")
    with pytest.raises(ModelSpecError) as info:
        resolve_spec("tiny-random-mistal")
    assert str(info.value).startswith("unknown model spec 'tiny-random-mistal': did you mean "
                                      "'tiny-random-mistral'? the tiny random models are ")
    with pytest.raises(ModelSpecError) as info:  # no family like it: no suggestion
        resolve_spec("tiny-random-bert")
    assert str(info.value).startswith("unknown model spec 'tiny-random-bert': the tiny random "
                                      "models are ")
    with pytest.raises(ModelSpecError) as info:
        resolve_spec("no-such-model")
    assert str(info.value).startswith("unknown model spec 'no-such-model': pass an alias")


def test_the_suggestion_reaches_the_command_line(pytester):
    pytester.makepyfile(test_m="def test_x(): pass")
    result = pytester.runpytest("--interp-model=smollm2-135M")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-interp: unknown model spec 'smollm2-135M': did "
                                 "you mean 'smollm2-135m'? pass an alias *"])


# -- 7. the report's snapshot diff --------------------------------------------------------

def test_a_snapshot_diff_wraps_and_lists_the_lines_that_differ():
    old = 'header\n{"a": 1, "long": "' + "x" * 300 + '"}\nsame'
    new = 'header\n{"a": 2, "long": "' + "x" * 300 + '"}\nsame'
    html = snapshot_figure(SnapshotDiff("s", old, new, ("a: 1 -> 2",)))
    assert ("<b>lines that differ</b><pre class='diff'>"
            f"<span class='del'>- {{&quot;a&quot;: 1, &quot;long&quot;: &quot;{'x' * 300}"
            f"&quot;}}</span><span class='add'>+ {{&quot;a&quot;: 2, &quot;long&quot;: "
            f"&quot;{'x' * 300}&quot;}}</span></pre>") in html
    assert "header" not in html.split("<pre class='diff'>")[1].split("</pre>")[0]
    template = Path(init.__file__).parents[1] / "report" / "templates" / "report.html.j2"
    assert "pre.old,pre.new,pre.diff{white-space:pre-wrap;overflow-wrap:anywhere}" in \
        template.read_text()


# -- 8. ablation snapshots have provenance ------------------------------------------------

def test_an_ablation_snapshot_has_provenance(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_ablation(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.ablate(
                "The cat sat on the", answer=" mat", ablate=["L0H1"])
    """)
    pytester.runpytest("--snapshot-update", "-p", "no:cacheprovider").assert_outcomes(passed=1)
    stored = (pytester.path / "__snapshots__" / "test_m.interp").read_text()
    meta = json.loads(next(line for line in stored.splitlines() if '"provenance"' in line))
    assert meta["provenance"]["weights"] == "tiny-random-llama-seed0-v1"
    assert set(meta["provenance"]) >= {"weights", "tokenizer", "backend", "torch",
                                       "transformers"}
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# -- 9. load_hf -----------------------------------------------------------------------------

def test_load_hf_gives_the_model_and_tokenizer_behind_a_spec():
    model, tokenizer = load_hf("tiny-random-llama")
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 3
    assert all(p.requires_grad for p in model.parameters())
    assert tokenizer("The cat")["input_ids"]
    with pytest.raises(InterpError, match="did you mean 'tiny-random-llama'"):
        load_hf("tiny-random-Llama")
    with pytest.raises(InterpError, match="dtype must be one of float32, bfloat16, float16, "
                                          "got 'float64'"):
        load_hf("tiny-random-llama", dtype="float64")


def test_importing_pytest_interp_loads_no_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, pytest_interp, "
                           "pytest_interp.plugin; print('torch' in sys.modules)"],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_readme_fine_tuning_example_runs(pytester):
    pytester.makepyfile(test_load_hf_example=doc_files()["test_load_hf_example.py"])
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)
