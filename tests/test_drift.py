"""A test's snapshot belongs to the test: in a checkpoint series every model is compared
with its one stored snapshot (or with the baseline's result), and how far each moved is a
drift in noise floors, held to a budget: within it the test passes with its diff shown;
over it the test fails, or, with --interp-drift=report, is DRIFT."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

SNAPSHOT_TEST = """
    def test_heads(interp_model, interp_snapshot):
        assert interp_snapshot{call} == interp_model.attention()
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """tiny-random-llama saved as ``base``, a byte copy ``copy``, and ``tuned`` (one head's
    queries sharpened, as a fine-tune might move it)."""
    from pytest_interp.backends.loading import load_hf, resolve_spec

    from .test_snapshot import _perturbed_copy

    root = tmp_path_factory.mktemp("ckpt")
    loaded = load_hf(resolve_spec("tiny-random-llama"))
    loaded.model.save_pretrained(root / "base")
    loaded.tokenizer.save_pretrained(root / "base")
    shutil.copytree(root / "base", root / "copy")
    _perturbed_copy(lambda spec: loaded, root / "tuned", layer=1, head=2)
    return {name: root / name for name in ("base", "copy", "tuned")}


def _suite(pytester: pytest.Pytester, checkpoints: dict[str, Path], call: str = "") -> str:
    """The snapshot test, its snapshot written on ``base`` in a single-model run; the
    snapshot file's text."""
    pytester.makepyfile(test_s=SNAPSHOT_TEST.format(call=call))
    assert pytester.runpytest(f"--interp-model={checkpoints['base']}",
                              "--snapshot-update").ret == 0
    return (pytester.path / "__snapshots__" / "test_s.interp").read_text()


def _series(checkpoints: dict[str, Path], *names: str) -> list[str]:
    return [f"--interp-model={checkpoints[name]}" for name in names]


@pytest.mark.slow
def test_every_model_of_a_series_is_compared_with_the_one_snapshot(pytester, checkpoints):
    _suite(pytester, checkpoints)
    result = pytester.runpytest(*_series(checkpoints, "base", "copy", "tuned"), "-v")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["test_s.py::test_heads[[]base] PASSED*",
                                 "test_s.py::test_heads[[]copy] PASSED*",
                                 "test_s.py::test_heads[[]tuned] FAILED*",
                                 "*attention of tuned changed beyond the noise floor*"])
    assert "does not exist" not in result.stdout.str()
    assert "unused" not in result.stdout.str()


@pytest.mark.slow
def test_snapshot_update_in_a_series_asks_which_model_writes(pytester, checkpoints):
    written = _suite(pytester, checkpoints)
    series = _series(checkpoints, "tuned", "base")
    result = pytester.runpytest(*series, "--snapshot-update")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        "ERROR: pytest-interp: --snapshot-update with 2 models would write each test's one "
        "snapshot once per model: name the model that writes with --interp-snapshot-model "
        "(one of tuned, base)"])
    result = pytester.runpytest(*series, "--snapshot-update", "--interp-snapshot-model=nope")
    result.stderr.fnmatch_lines(["ERROR: pytest-interp: --interp-snapshot-model 'nope' is not a "
                                 "model of this series: use one of tuned, base"])
    # base writes (by id): the file is the one a single-model run on base writes
    result = pytester.runpytest(*series, "--snapshot-update", "--interp-snapshot-model=base")
    assert result.ret == 0, result.stdout.str()
    assert (pytester.path / "__snapshots__" / "test_s.interp").read_text() == written
    # tuned writes (by spec): its own result replaces base's, once
    result = pytester.runpytest(*series, "--snapshot-update",
                                f"--interp-snapshot-model={checkpoints['tuned']}")
    assert result.ret == 0
    text = (pytester.path / "__snapshots__" / "test_s.interp").read_text()
    assert text != written and text.count("# name: test_heads") == 1
    assert "attention of tuned" in text


def test_a_baseline_replaces_the_stored_snapshot_as_the_reference(pytester, checkpoints):
    _suite(pytester, checkpoints)
    result = pytester.runpytest(*_series(checkpoints, "copy", "tuned"),
                                f"--interp-baseline={checkpoints['base']}", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "test_s.py::test_heads[[]copy] PASSED*",
        "test_s.py::test_heads[[]tuned] FAILED*",
        f"*attention of tuned changed from baseline {checkpoints['base']} beyond the noise floor*"])
    failure = result.stdout.str().split("short test summary info")[0]
    assert "attention of tuned changed beyond" not in failure  # not the stored snapshot
    # the assertion and its section in full, once: not compared again after the test body
    assert failure.count("L1H2: entropy 2.70 -> 0.00") == 2


def test_drift_within_a_snapshots_budget_passes_with_its_diff_shown(pytester, checkpoints):
    _suite(pytester, checkpoints, call="(max_drift=1e6)")
    result = pytester.runpytest(*_series(checkpoints, "base", "tuned"))
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([
        "interp: 1 snapshot moved beyond the noise floor, within the drift budget (passed; "
        "the report shows the diffs):",
        "  ~ test_s.py::test_heads[[]tuned]: attention of tuned, drift 27 noise floors (budget "
        "1e+06)"])


@pytest.mark.slow
def test_the_session_budget_and_the_drift_outcome(pytester, checkpoints):
    _suite(pytester, checkpoints)
    series = _series(checkpoints, "base", "tuned")
    assert pytester.runpytest(*series, "--interp-max-drift=1e6").ret == 0
    result = pytester.runpytest(*series, "--interp-drift=report", "-rA",
                                "--junitxml=junit.xml")
    assert result.ret == 0  # DRIFT is reported, not failed
    outcomes = result.parseoutcomes()
    assert (outcomes.get("passed"), outcomes.get("drift")) == (1, 1), outcomes
    result.stdout.fnmatch_lines([
        "test_s.py .D*",
        "*= DRIFT =*",
        "*attention of tuned changed beyond the noise floor*",
        "  drift * noise floors, over the budget of 1 (raise it with "
        "interp_snapshot(max_drift=N) or --interp-max-drift=N)",
        "*1 passed, 1 drift*"])
    case = next(c for c in ET.parse(pytester.path / "junit.xml").iter("testcase")
                if c.get("name") == "test_heads[tuned]")
    properties = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert properties["interp_verdict"] == "drift"
    assert float(properties["interp_drift"]) > 1


@pytest.mark.parametrize(("option", "message"), [
    ("--interp-max-drift=0.5", "argument --interp-max-drift: --interp-max-drift is a number "
                               "of noise floors >= 1 (1 allows nothing beyond the noise "
                               "floor), got 0.5"),
    ("--interp-drift=maybe", "argument --interp-drift: invalid choice: 'maybe' (choose from "
                             "'fail', 'report')"),
])
def test_bad_drift_options_are_one_line(pytester, option, message):
    result = pytester.runpytest(option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_a_bad_snapshot_budget_fails_the_test_naming_it(pytester):
    pytester.makepyfile(test_s="""
        def test_lens(interp_model, interp_snapshot):
            assert interp_snapshot(max_drift=0) == interp_model.lens("Hi")
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["pytest-interp: interp_snapshot(max_drift=0): max_drift is a "
                                 "number of noise floors >= 1 (1 allows nothing beyond the "
                                 "noise floor), got 0"])
    assert "Traceback" not in result.stdout.str() and "def test_lens" not in result.stdout.str()


def test_the_reports_grid_and_trend_show_each_models_drift(pytester, checkpoints):
    import re

    _suite(pytester, checkpoints)
    pytester.runpytest(*_series(checkpoints, "base", "copy", "tuned"), "--interp-max-drift=100",
                       "--interp-report=r.html").assert_outcomes(passed=3)
    page = (pytester.path / "r.html").read_text()
    grid = page[page.index('<table class="grid"'):]
    grid = grid[:grid.index("</table>")]
    drifts = re.findall(r'<small class="drift">([^<]+)</small>', grid)
    assert drifts[:2] == ["0", "0"] and float(drifts[2]) > 20  # base, copy, tuned
    assert f"drift {drifts[2]} noise floors from the snapshot" in grid
    assert "test_s.py::test_heads: snapshot drift (noise floors)" in page  # the trend's title
