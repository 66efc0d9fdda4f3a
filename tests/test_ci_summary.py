"""CI integration: JUnit XML carries what each expectation measured, and with
GITHUB_STEP_SUMMARY set the session appends a Markdown summary (pytester)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from pytest_interp.report.summary import SummaryRow, markdown

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

PROMPT = "The cat sat on the"
LABEL = "logit_diff(answer=' mat', foil=' rug')"  # each measured value names its marker
SUITE = f"""
    import pytest

    @pytest.mark.logit_diff({PROMPT!r}, answer=" mat", foil=" rug", min=-100)
    def test_passes():
        pass

    @pytest.mark.logit_diff({PROMPT!r}, answer=" mat", foil=" rug", min=100)
    @pytest.mark.lens({PROMPT!r}, layer=-1, target=" mat", top_k=5)
    def test_fails():
        pass

    @pytest.mark.logit_diff(prompts=[{PROMPT!r}, "The dog sat on the"], answer=" mat",
                            foil=" rug", max=100)
    def test_dataset():
        pass

    def test_plain():
        pass
"""


def _logit_diff(load_backend, prompt: str) -> float:
    from pytest_interp.model import InterpModel

    return InterpModel(load_backend("tiny-random-llama")).logit_diff(prompt, " mat", " rug")


def test_junit_xml_carries_each_measured_value(pytester, load_backend):
    value = _logit_diff(load_backend, PROMPT)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest("--junitxml=junit.xml").assert_outcomes(passed=3, failed=1)
    cases = {case.get("name"): [(p.get("name"), p.get("value")) for p in case.iter("property")]
             for case in ET.parse(pytester.path / "junit.xml").getroot().iter("testcase")}
    assert cases["test_passes"] == [
        ("interp_measured", f"{LABEL}: logit diff {value:.4g} (passed)")]
    assert cases["test_fails"] == [  # the lens marker with top_k reads no single number
        ("interp_measured", f"{LABEL}: logit diff {value:.4g} (failed)")]
    (name, dataset), = cases["test_dataset"]
    assert name == "interp_measured"
    assert dataset.startswith(f"{LABEL}: mean logit diff ") and dataset.endswith(
        ", n=2 (passed)") and ", 95% CI [" in dataset
    assert cases["test_plain"] == []


def test_github_step_summary_gets_the_markdown_grid(pytester, load_backend, monkeypatch):
    value = _logit_diff(load_backend, PROMPT)
    summary = pytester.path / "summary.md"
    summary.write_text("# earlier steps\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest().assert_outcomes(passed=3, failed=1)
    lines = summary.read_text().splitlines()
    assert lines[:7] == [
        "# earlier steps",
        "## pytest-interp: tiny-random-llama via transformer_lens",
        "",
        "1 failed, 3 passed",
        "",
        "| test | outcome | measured |",
        "|---|---|---|",
    ]
    assert lines[7] == (f"| `test_m.py::test_fails` | **FAILED** | {LABEL}: logit diff "
                        f"{value:.4g} (failed) |")
    assert lines[8].startswith(f"| `test_m.py::test_dataset` | passed | {LABEL}: mean logit "
                               "diff ")
    assert lines[9:] == [
        f"| `test_m.py::test_passes` | passed | {LABEL}: logit diff {value:.4g} (passed) |",
        "| `test_m.py::test_plain` | passed |  |",
    ]


@pytest.mark.slow
def test_step_summary_under_xdist_is_written_once(pytester, monkeypatch):
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest_subprocess("-n", "2").assert_outcomes(passed=3, failed=1)
    text = summary.read_text()
    assert text.count("## pytest-interp: ") == 1
    assert text.count("| `test_m.py::") == 4 and f"{LABEL}: logit diff " in text


def test_no_summary_without_the_variable_or_when_collecting(pytester, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="def test_x():\n    pass\n")
    pytester.runpytest().assert_outcomes(passed=1)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest("--collect-only")
    assert not summary.exists()


def test_summary_lists_the_largest_snapshot_changes_failed_first():
    rows = [SummaryRow("t.py::b", "passed", ["logit_diff: logit diff 1 (passed)"]),
            SummaryRow("t.py::a", "failed", [], ["lens of m: layer 1 top-1 ' a' -> ' b'",
                                                 "lens of m: P(' a') 0.9 -> 0.2"]),
            SummaryRow("t.py::c|d", "inconclusive")]
    assert markdown(rows, "m via nnsight", changes=1).splitlines() == [
        "## pytest-interp: m via nnsight",
        "",
        "1 failed, 1 inconclusive, 1 passed",
        "",
        "| test | outcome | measured |",
        "|---|---|---|",
        "| `t.py::a` | **FAILED** |  |",
        "| `t.py::c\\|d` | **INCONCLUSIVE** |  |",
        "| `t.py::b` | passed | logit_diff: logit diff 1 (passed) |",
        "",
        "### Largest snapshot changes",
        "",
        "- `t.py::a`: lens of m: layer 1 top-1 ' a' -> ' b'",
    ]


@pytest.mark.parametrize("outcome", ["skipped"])
def test_summary_counts_every_outcome(outcome):
    assert markdown([SummaryRow("t::x", outcome)], "m").splitlines()[2] == f"1 {outcome}"


def test_step_summary_names_the_largest_snapshot_changes(pytester, load_raw_hf, tmp_path,
                                                         monkeypatch):
    from .test_snapshot import _perturbed_copy

    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_attention(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.attention()
    """)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    _perturbed_copy(load_raw_hf, tmp_path / "perturbed", layer=1, head=2)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest(f"--interp-model={tmp_path / 'perturbed'}").assert_outcomes(failed=1)
    lines = summary.read_text().splitlines()
    assert lines[6] == "| `test_m.py::test_attention` | **FAILED** |  |"
    start = lines.index("### Largest snapshot changes")
    assert lines[start + 2] == "- `test_m.py::test_attention`: attention of perturbed: L1H2: " \
                               "entropy 2.70 -> 0.00"
    assert len(lines) == start + 5  # the first 3 changes of the failed snapshot


def test_step_summary_of_a_series_has_the_test_x_model_grid(pytester, monkeypatch):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.attention(kind="self", min_score=0.01)
        def test_self_head():
            pass

        @pytest.mark.attention(kind="self", min_score=0.99)
        def test_sharp_self_head():
            pass
    """)
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.runpytest("--interp-model=tiny-random-llama", "--interp-model=tiny-random-gpt2",
                       "--interp-baseline=tiny-random-llama").assert_outcomes(passed=2, failed=2)
    lines = summary.read_text().splitlines()
    assert lines[0] == "## pytest-interp: tiny-random-llama, tiny-random-gpt2 via " \
                       "transformer_lens, against baseline tiny-random-llama"
    start = lines.index("### Tests x models")
    assert lines[start + 2:start + 6] == [
        "| test | tiny-random-llama | tiny-random-gpt2 |",
        "|---|---|---|",
        "| `test_m.py::test_self_head` | passed | passed |",
        "| `test_m.py::test_sharp_self_head` | **FAILED** | **FAILED** |",
    ]


def test_measured_values_are_labelled_and_in_source_order(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.logit_diff({PROMPT!r}, answer=" mat", foil=" rug", min=-100)
        @pytest.mark.attention(kind="self", head=(1, 2), max_score=1)
        @pytest.mark.logit_diff({PROMPT!r}, answer=" mat", foil=" dog", min=-100)
        def test_three():
            pass
    """)
    pytester.runpytest("--junitxml=junit.xml").assert_outcomes(passed=1)
    case = next(ET.parse(pytester.path / "junit.xml").getroot().iter("testcase"))
    names = [p.get("value").split(":")[0] for p in case.iter("property")]
    assert names == ["logit_diff(answer=' mat', foil=' rug')",
                     "attention(kind='self', head=(1, 2))",
                     "logit_diff(answer=' mat', foil=' dog')"]
