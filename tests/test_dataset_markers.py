"""Dataset markers through pytest on tiny models: collection errors, the INCONCLUSIVE
outcome and its option, JUnit XML, -vv, the report, and --interp-controls (VACUOUS)."""

from __future__ import annotations

import re

import pytest

from pytest_interp import dataset
from pytest_interp.model import InterpModel

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

LOGIT_DIFF_USAGE = "@pytest.mark.logit_diff(prompt, *, answer, foil, min=None, max=None" \
    + DATASET_USAGE


@pytest.mark.parametrize(("marker", "message"), [
    ('logit_diff(prompts="ioi:4", min=0, stat="fraction")',
     "stat='fraction' needs min_fraction= between 0 and 1: the share of prompts that must pass"),
    ('logit_diff(prompts="ioi:4", min=0, stat="mode")',
     "stat must be one of mean, median, fraction, got 'mode'"),
    ('logit_diff(prompts="ioi:4", min=0, min_fraction=0.5)',
     "min_fraction= applies to stat='fraction', not stat='mean'"),
    ('logit_diff(prompts="ioi:4", min=0, confidence=1.5)',
     "confidence must be between 0 and 1, got 1.5"),
    ('logit_diff(prompts="ioi:4", min=0, interval="bootstrap")',
     "interval must be one of percentile, bca, got 'bootstrap'"),
    ('logit_diff(prompts="ioi:4", min=0, stats="mean")',
     "unknown keyword 'stats' (did you mean 'stat'?); usage: " + LOGIT_DIFF_USAGE),
    ('logit_diff(prompts="ioi:4", answer=" Mary", min=0)',
     "answer given by both the marker and prompts row 0: drop one"),
    ('logit_diff(prompts=["a b"], min=0)',
     "prompts row 0 ('a b') has no 'answer': give it in every row or once in the marker"),
    ('logit_diff(prompts=[("a", " x", "")], min=0)',
     "prompts row 0 ('a'): foil must be a non-empty string, got ''"),
    ('logit_diff(prompts="ioi:4")', "prompts row 0 ('Then, Jane and Kevin w...the hospital. "
                                    "Kevin gave a snack to'): no check given: pass min= and/or "
                                    "max="),
    ('generation(prompts=["a"], contains="x")',
     "stat='mean' needs a per-prompt number, which this marker does not give: use "
     "stat='fraction' with min_fraction="),
    ('perplexity(prompts="nope.jsonl", max=10)', "prompts file '*nope.jsonl' does not exist"),
])
def test_bad_dataset_markers_are_collection_errors(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


def test_a_row_that_needs_the_model_fails_its_test_alone(pytester):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(
        pytester, 'logit_diff(prompts=[("a", " x", " Parisian-ish")], min=0)',
        "prompts row 0 ('a'): target ' Parisian-ish' is not a single token: it tokenizes to "
        "[' Paris', 'ian', '-', 'ish']; use a single-token target (mind the leading space, e.g. "
        "' Paris')")


def test_collect_only_reads_datasets_without_a_model(pytester):
    ini(pytester, model="tiny-random-llama")
    (pytester.path / "rows.jsonl").write_text('{"prompt": "a", "answer": " x", "foil": " y"}\n')
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.logit_diff(prompts="rows.jsonl", min=0)
        @pytest.mark.activation_patching(prompts="ioi:64", layer=0, position="S2",
                                         min_recovery=0.5)
        def test_x():
            pass
    """)
    result = pytester.runpytest("--collect-only")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*<Function test_x>*"])
    assert "runs computed" not in result.stdout.str()  # no model was loaded


@pytest.fixture(scope="module")
def llama_mean(load_backend):
    """The mean logit diff of tiny-random-llama over ioi:16, and its interval."""
    model = InterpModel(load_backend("tiny-random-llama"))
    return dataset(model, "logit_diff", "ioi:16", min=-1e9).estimate


def _three(pytester, est, extra=""):
    ini(pytester, model="tiny-random-llama")
    low, mid, high = est.low - 1, est.value, est.high + 1
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.logit_diff(prompts="ioi:16", min={low!r}{extra})
        def test_pass():
            pass

        @pytest.mark.logit_diff(prompts="ioi:16", min={high!r}{extra})
        def test_fail():
            pass

        @pytest.mark.logit_diff(prompts="ioi:16", min={mid!r}{extra})
        def test_inconclusive():
            pass
    """)


def test_inconclusive_is_its_own_outcome(pytester, llama_mean):
    _three(pytester, llama_mean)
    result = pytester.runpytest("-v", "--junitxml=out.xml")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([
        "test_m.py::test_pass PASSED*", "test_m.py::test_fail FAILED*",
        "test_m.py::test_inconclusive INCONCLUSIVE*",
        "*= FAILURES =*", "*_ test_fail _*",
        f"logit_diff over ioi:16: mean logit diff is {llama_mean.value:.3f}, 95% CI "
        f"[[]{llama_mean.low:.3f}, {llama_mean.high:.3f}[]] (percentile bootstrap, 9999 "
        f"resamples, n=16), expected min={llama_mean.high + 1!r}: the whole interval is on the "
        "wrong side",
        "  per prompt, worst first (10 of 16; -vv shows all):",
        "     row  logit diff  prompt",
        "*= INCONCLUSIVE =*", "*_ test_inconclusive _*",
        f"logit_diff over ioi:16: mean logit diff is {llama_mean.value:.3f}, * expected "
        f"min={llama_mean.value!r}: INCONCLUSIVE, the interval straddles the bound; add "
        "prompts or move the bound",
        "*= 1 failed, 1 passed, 1 inconclusive in *",
    ])
    xml = (pytester.path / "out.xml").read_text()
    case = re.search(r'<testcase classname="test_m" name="test_inconclusive".*?</testcase>',
                     xml, re.S)
    assert case is not None
    assert '<property name="interp_verdict" value="inconclusive" />' in case.group(0)
    assert "<failure" in case.group(0)
    quiet = pytester.runpytest("-q", "-p", "no:randomly")
    quiet.stdout.fnmatch_lines([".FI*"])


@pytest.mark.parametrize(("policy", "ret", "summary"), [
    ("pass", pytest.ExitCode.TESTS_FAILED, "*= 1 failed, 1 passed, 1 inconclusive in *"),
    ("skip", pytest.ExitCode.TESTS_FAILED, "*= 1 failed, 1 passed, 1 inconclusive in *"),
])
def test_inconclusive_option_passes_or_skips(pytester, llama_mean, policy, ret, summary):
    _three(pytester, llama_mean)
    result = pytester.runpytest(f"--interp-inconclusive={policy}", "--junitxml=out.xml",
                                "-k", "not fail")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*= INCONCLUSIVE =*", "*_ test_inconclusive _*",
                                 "logit_diff over ioi:16: *: INCONCLUSIVE, *",
                                 "*= 1 passed, 1 deselected, 1 inconclusive in *"])
    xml = (pytester.path / "out.xml").read_text()
    assert ("<skipped" in xml) is (policy == "skip") and "<failure" not in xml
    assert pytester.runpytest(f"--interp-inconclusive={policy}").ret == ret
    result = pytester.runpytest("--interp-inconclusive=maybe")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*argument --interp-inconclusive: invalid choice: 'maybe' "
                                 "(choose from 'fail', 'pass', 'skip')"])


def test_verbose_twice_lists_every_row_and_the_report_plots_them(pytester, llama_mean):
    _three(pytester, llama_mean)
    result = pytester.runpytest("-vv", "-k", "fail", "--interp-report", "r.html")
    result.stdout.fnmatch_lines(["  per prompt, worst first (all):"])
    failures = result.stdout.str().split("short test summary info")[0]
    assert len(re.findall(r"^ +\d+ +-?\d+\.\d{3}  '", failures, re.M)) == 16
    result = pytester.runpytest("--interp-report", "r.html")
    page = (pytester.path / "r.html").read_text()
    assert page.count("<circle") == 48  # 16 prompts x 3 tests
    assert 'class="test inconclusive"' in page and "-&gt; INCONCLUSIVE" in page
    assert "1 failed, 1 inconclusive, 1 passed" in re.sub("<[^>]+>", "", page)


def test_controls_flag_vacuous_tests(pytester, load_backend):
    ini(pytester, model="tiny-random-llama")
    model = InterpModel(load_backend("tiny-random-llama"))
    value = model.logit_diff("The cat sat on the", " mat", " rug")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.logit_diff(prompts="ioi:8", min=-1000)
        def test_any_model_passes():
            pass

        @pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" rug",
                                min={value - 1e-3!r}, max={value + 1e-3!r})
        def test_this_model_only():
            pass

        @pytest.mark.logit_diff(prompts="ioi:8", min=1000)
        def test_fails():
            pass
    """)
    result = pytester.runpytest("--interp-controls", "--interp-report", "r.html")
    result.assert_outcomes(passed=2, failed=1, warnings=1)
    result.stdout.fnmatch_lines([
        "*VacuousWarning: VACUOUS: @pytest.mark.logit_diff also passed on a randomly "
        "re-initialised tiny-random-llama (--interp-controls): it does not depend on what "
        "the model learned; tighten its bounds",
        "interp: 1 vacuous test (also pass on a re-initialised model):",
        "  VACUOUS test_m.py::test_any_model_passes",
        "interp: tiny-random-llama * re-initialised control (--interp-controls): *",
    ])
    assert '<p class="note"><b>VACUOUS: @pytest.mark.logit_diff' in \
        (pytester.path / "r.html").read_text()
    assert "VACUOUS" not in pytester.runpytest().stdout.str()  # only when asked
