"""Results as data and shards: a series split into shards, each session writing its results
file, merges into the outcomes, measured values and trend points one session gives; each
shard loads only its models; a missing shard is named, never merged silently."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_interp.merge import read
from pytest_interp.plugin.shards import assign

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

MODELS = ("tiny-random-llama", "tiny-random-gpt2", "tiny-random-qwen2")
SUITE = """
import pytest


@pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" dog", min=-1e9)
@pytest.mark.lens("The cat sat on the", " mat", layer=-1, top_k=1000000)
def test_markers():
    pass


def test_body(interp_model):
    assert interp_model.info.n_layers > 0


def test_no_model():
    assert 1 + 1 == 2
"""


def test_assign_balances_largest_first_and_is_deterministic():
    assert assign({"a": 1, "b": 1, "c": 1, "d": 1}, 3) == {"a": 1, "b": 2, "c": 3, "d": 1}
    assert assign({"small": 1, "big": 5, "mid": 3}, 2) == {"big": 1, "mid": 2, "small": 2}
    assert assign({}, 4) == {}


def _facts(path: Path) -> dict[str, tuple]:
    """Test id -> (outcome, measured values, trend points) from a results file."""
    return {row["nodeid"]: (row["outcome"], row["record"]["measured"], row["record"]["points"],
                            row["record"]["model"])
            for row in read([path]).rows if row["when"] == "call"}


@pytest.mark.slow
def test_a_series_in_three_shards_merges_into_one_sessions_results(pytester, tmp_path):
    ini(pytester)
    pytester.makepyfile(test_series=SUITE)
    models = [f"--interp-model={m}" for m in MODELS]
    whole = pytester.runpytest(*models, f"--interp-results={tmp_path / 'whole.jsonl'}",
                               f"--interp-report={tmp_path / 'whole.html'}",
                               "-p", "no:cacheprovider")
    whole.assert_outcomes(passed=7)
    loaded = []
    for i in (1, 2):
        shard = pytester.runpytest(*models, f"--interp-shard={i}/3", "-p", "no:cacheprovider",
                                   f"--interp-results={tmp_path / f'shard{i}.jsonl'}")
        shard.assert_outcomes(passed=3 if i == 1 else 2, deselected=4 if i == 1 else 5)
        shard.stdout.fnmatch_lines([f"interp: shard {i}/3 runs {3 if i == 1 else 2} of 7 "
                                    f"tests: {MODELS[i - 1]}"])
        loaded.append([line.split()[1] for line in shard.stdout.lines
                       if line.startswith("interp: tiny-random-")])
    assert loaded == [[MODELS[0]], [MODELS[1]]]  # each shard loads its model alone
    # the third under xdist: its workers mark each row with its place in the session's order
    shard = pytester.runpytest_subprocess(*models, "--interp-shard=3/3", "-n", "2",
                                          f"--interp-results={tmp_path / 'shard3.jsonl'}")
    shard.assert_outcomes(passed=2)
    rows = read([tmp_path / "shard3.jsonl"]).rows
    assert sorted(row["order"] for row in rows) == [4, 5]  # qwen2's two, after the others
    shards = [tmp_path / f"shard{i}.jsonl" for i in (1, 2, 3)]
    merged = {}
    for path in shards:
        merged.update(_facts(path))
    assert merged == _facts(tmp_path / "whole.jsonl")
    assert read(shards).problems == []
    done = subprocess.run([sys.executable, "-m", "pytest_interp", "merge", *map(str, shards),
                           "--report", str(tmp_path / "merged.html"), "--step-summary",
                           str(tmp_path / "summary.md"), "--junitxml",
                           str(tmp_path / "merged.xml")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "merged.xml").getroot()[0]
    assert (suite.get("tests"), suite.get("failures")) == ("7", "0")
    measured = [p.get("value") for p in suite.iter("property")
                if p.get("name") == "interp_measured"]
    assert len(measured) == 3 and all("logit diff" in m for m in measured)  # one per model
    page = (tmp_path / "merged.html").read_text()
    assert page.count('<section class="test passed"') == 7
    # The merged report is the one session's, byte for byte, less timings and the line
    # that names the files it was merged from.
    assert _less_timings(page) == _less_timings((tmp_path / "whole.html").read_text())
    assert "<div>interp: merged from 3 results files: shard1.jsonl, shard2.jsonl, " \
           "shard3.jsonl</div>" in page
    summary = (tmp_path / "summary.md").read_text()
    assert all(model.removeprefix("tiny-random-") in summary for model in MODELS)
    missing = subprocess.run([sys.executable, "-m", "pytest_interp", "merge", str(shards[0]),
                              str(shards[2]), "--report", str(tmp_path / "part.html")],
                             capture_output=True, text=True)
    assert missing.returncode == 3
    assert missing.stderr.splitlines()[:2] == [
        "merge: shard 2/3 is missing", "merge: no test has a result on tiny-random-gpt2"]
    assert "MERGE PROBLEM: shard 2/3 is missing" in (tmp_path / "part.html").read_text()


def _less_timings(page: str) -> str:
    """A report without its timings (each test's, the session's, when it was written) and
    without the line naming the results files a merge read."""
    import re

    page = re.sub(r"<small>\([\d.]+s\)</small>", "", page)
    page = re.sub(r" in [\d.]+s, written [\d-]+ [\d:]+", "", page)
    return re.sub(r"<div>interp: merged from .*?</div>\n?", "", page)


def test_the_results_file_is_written_line_by_line_with_a_versioned_schema(pytester, tmp_path):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_one=SUITE)
    pytester.runpytest(f"--interp-results={tmp_path / 'r.jsonl'}", "-p", "no:cacheprovider")
    rows = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert {row["schema"] for row in rows} == {"pytest-interp-results/1"}
    assert [row["type"] for row in rows] == ["session", "test", "test", "test", "end"]
    assert rows[0]["models"] == ["tiny-random-llama"] and rows[0]["shard"] is None
    markers = next(row for row in rows if row.get("nodeid", "").endswith("test_markers"))
    assert markers["outcome"] == "passed"
    assert markers["record"]["measured"][0].startswith("logit_diff(answer=' mat', foil=' dog'): "
                                                       "logit diff ")
    assert rows[-1]["exitstatus"] == 0


def test_a_bad_shard_is_one_usage_error(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_one=SUITE)
    result = pytester.runpytest("--interp-shard=4/3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--interp-shard takes I/N with 1 <= I <= N, e.g. 2/3, got "
                                 "'4/3'"])


def test_a_previous_results_files_durations_balance_the_shards(pytester, tmp_path):
    """llama's tests took 100 s last time, the others' 1 s: llama gets a shard of its own."""
    ini(pytester)
    pytester.makepyfile(test_series=SUITE)
    past = tmp_path / "past.jsonl"
    rows = [{"type": "test", "nodeid": f"test_series.py::{name}[{model}]", "duration": cost}
            for model, cost in zip(MODELS, (100.0, 1.0, 1.0), strict=True)
            for name in ("test_markers", "test_body")]
    past.write_text("".join(json.dumps(row) + "\n" for row in rows))
    models = [f"--interp-model={m}" for m in MODELS]
    loaded = []
    for i in (1, 2):
        result = pytester.runpytest(*models, f"--interp-shard={i}/2", "-p", "no:cacheprovider",
                                    f"--interp-shard-durations={past}")
        loaded.append(sorted(line.split()[1] for line in result.stdout.lines
                             if line.startswith("interp: tiny-random-")))
    assert loaded == [["tiny-random-llama"], ["tiny-random-gpt2", "tiny-random-qwen2"]]
    counted = []
    for i in (1, 2):  # without durations: by number of tests, the first two models in turn
        result = pytester.runpytest(*models, f"--interp-shard={i}/2", "-p", "no:cacheprovider")
        counted.append(sorted(line.split()[1] for line in result.stdout.lines
                              if line.startswith("interp: tiny-random-")))
    assert counted == [["tiny-random-llama", "tiny-random-qwen2"], ["tiny-random-gpt2"]]


def _results_file(path: Path, models: list[str], outcomes: dict[str, str],
                  shard: list[int] | None = None, exitstatus: int = 1) -> Path:
    """A results file with one test per model of ``outcomes`` (model -> outcome), ended with
    ``exitstatus``."""
    rows = [{"schema": "pytest-interp-results/1", "type": "session", "models": models,
             "specs": models, "shard": shard, "header": [], "backend": "transformer_lens"}]
    rows += [{"schema": "pytest-interp-results/1", "type": "test",
              "nodeid": f"test_m.py::test_head[{m}]", "when": "call", "outcome": o,
              "duration": 0.1, "failure": "", "record": {"model": m}}
             for m, o in outcomes.items()]
    rows.append({"schema": "pytest-interp-results/1", "type": "end", "exitstatus": exitstatus})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bisect_reads_the_answer_from_results_files(tmp_path):
    """The shards' results files of a whole series hold every model's outcome: bisect
    answers from them without a session."""
    from pytest_interp.bisect import BisectError, BisectUsage, from_results

    models = ["step_0", "step_1", "step_2", "step_3"]
    files = [_results_file(tmp_path / "a.jsonl", models,
                           {"step_0": "failed", "step_2": "passed"}, [1, 2]),
             _results_file(tmp_path / "b.jsonl", models,
                           {"step_1": "inconclusive", "step_3": "passed"}, [2, 2])]
    said: list[str] = []
    assert from_results(files, "pass", "", said.append) == "step_2"
    assert said == [
        "bisect: 4 models in 2 results files, step_0 ... step_3: the first that passes (no "
        "session run)",
        "bisect: step_0 fails, step_1 fails, step_2 passes, step_3 passes",
        "bisect: first model that passes: step_2 (step_1 fails)"]
    with pytest.raises(BisectError, match="the results files hold no selected test of step_1, "
                                          "step_3: give every shard's file"):
        from_results(files[:1], "pass", "", said.append)
    with pytest.raises(BisectError, match="the last model, step_3, does not fail"):
        from_results(files, "fail", "", said.append)
    with pytest.raises(BisectUsage) as err:
        from_results(files, "pass", "test_other", said.append)
    assert str(err.value) == ("--select 'test_other' matches no test of a model in the results "
                              "files: give part of a test id, e.g. --select test_induction")
    (tmp_path / "cut").mkdir()
    cut = _results_file(tmp_path / "cut" / "b.jsonl", models, {"step_1": "passed"}, [2, 2],
                        exitstatus=2)
    with pytest.raises(BisectError) as err:
        from_results([files[0], cut], "pass", "", said.append)
    assert str(err.value) == (
        f"{cut}: the session ended early (pytest exit status 2: interrupted, or errors during "
        "collection): its remaining tests are missing")
    for args, message in (
            (["--results", str(tmp_path / "none.jsonl")],
             f"bisect: no readable results file: {tmp_path / 'none.jsonl'}: not a results file "
             f"([Errno 2] No such file or directory: '{tmp_path / 'none.jsonl'}')"),
            (["--results", str(tmp_path / "x*.jsonl")],
             f"bisect: {tmp_path / 'x*.jsonl'} matches no file")):
        done = subprocess.run([sys.executable, "-m", "pytest_interp", "bisect", *args],
                              capture_output=True, text=True, check=False)
        assert (done.returncode, done.stderr.splitlines()[-1]) == (2, message)
    done = subprocess.run([sys.executable, "-m", "pytest_interp", "bisect", "--results",
                           str(tmp_path / "*.jsonl"), "--find", "pass"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "bisect: first model that passes: step_2 (step_1 " \
                                           "fails)"


def _merge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_interp", "merge", *args],
                          capture_output=True, text=True, check=False)


def test_a_set_that_is_not_whole_is_named_everywhere_and_exits_3(tmp_path):
    """A missing shard, a session cut short (interrupted, or errors during collection: it
    still writes its end line) and a whole session mixed with shards: on stderr, in the
    report, the step summary and the JUnit XML (a failing ``merge`` test case), exit 3."""
    models = ["step_0", "step_1", "step_2"]
    one = _results_file(tmp_path / "s1.jsonl", models, {"step_0": "passed"}, [1, 3])
    cut = _results_file(tmp_path / "s2.jsonl", models, {}, [2, 3], exitstatus=2)
    out = [f"--report={tmp_path / 'r.html'}", f"--step-summary={tmp_path / 's.md'}",
           f"--junitxml={tmp_path / 'j.xml'}"]
    done = _merge(str(one), str(cut), *out)
    problems = [
        f"{cut}: the session ended early (pytest exit status 2: interrupted, or errors during "
        "collection): its remaining tests are missing",
        "shard 3/3 is missing", "no test has a result on step_1, step_2"]
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        *(f"merge: {p}" for p in problems),
        f"merge: wrote report {tmp_path / 'r.html'}, step summary {tmp_path / 's.md'}, JUnit "
        f"XML {tmp_path / 'j.xml'}"]
    page = (tmp_path / "r.html").read_text()
    assert all(f"MERGE PROBLEM: {p}" in page for p in problems)
    summary = (tmp_path / "s.md").read_text()
    assert summary.startswith("".join(f"> **merge problem:** {p}\n>\n" for p in problems))
    import xml.etree.ElementTree as ET

    suite = ET.parse(tmp_path / "j.xml").getroot()[0]
    case = suite.find("testcase[@name='merge']")
    assert case is not None and suite.get("errors") == "1"
    assert case[0].get("message") == problems[0] and case[0].text == "\n".join(problems)
    whole = _results_file(tmp_path / "whole.jsonl", models, dict.fromkeys(models, "passed"))
    done = _merge(str(whole), str(one))
    assert done.returncode == 3
    assert f"merge: {whole} is a whole session, the others shards: merge the shards alone, or " \
           "the whole session alone" in done.stderr.splitlines()
    assert "missing" not in done.stderr  # the whole session holds the other shards' tests
    done = _merge(str(tmp_path / "shard-*.jsonl"))
    assert (done.returncode, done.stderr.splitlines()[-1]) == (
        2, f"python -m pytest_interp merge: error: {tmp_path / 'shard-*.jsonl'} matches no file")


def test_a_merged_junit_failure_keeps_its_message(tmp_path):
    from pytest_interp.merge import Merged, junit

    rows = [{"type": "test", "nodeid": "t.py::test_a", "when": "call", "outcome": "failed",
             "duration": 0.5, "failure": "long text", "message": "Failed: L1H2 changed",
             "record": {"model": None}}]
    junit(Merged(sessions=[{}], rows=rows), tmp_path / "j.xml")
    failure = (tmp_path / "j.xml").read_text()
    assert '<failure message="Failed: L1H2 changed">long text</failure>' in failure


def test_an_empty_shard_passes_and_says_why(pytester, tmp_path):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_one=SUITE)
    result = pytester.runpytest("--interp-shard=2/2", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([
        "interp: shard 2/2 has no tests: the suite splits into 1 group (whole models of a "
        "series, else whole test files), fewer than 2; an empty shard passes"])
    result = pytester.runpytest("--interp-shard=1/2", "-p", "no:cacheprovider",
                                f"--interp-shard-durations={tmp_path / 'past.jsonl'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: --interp-shard-durations {tmp_path / 'past.jsonl'}: no such file: give the "
        "results file (--interp-results) of an earlier run"])
    result = pytester.runpytest("--interp-shard=1/2", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["interp: shard 1/2 runs 3 of 3 tests: *test_one.py"])
    result = pytester.runpytest_subprocess("--interp-shard=2/2", "-n", "2")  # workers choose
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["interp: shard 2/2 has no tests: *; an empty shard passes"])


def test_a_session_stopped_early_by_maxfail_is_named(tmp_path):
    """-x or --maxfail ends a session normally (exit status 1), with tests not run: its end
    line's count of tests tells."""
    path = _results_file(tmp_path / "x.jsonl", ["m"], {"m": "failed"}, [1, 1])
    end = {"schema": "pytest-interp-results/1", "type": "end", "exitstatus": 1, "collected": 3}
    path.write_text("\n".join([*path.read_text().splitlines()[:-1], json.dumps(end)]) + "\n")
    assert read([path]).unfinished == [
        f"{path}: 2 of its 3 tests have no result (stopped early: -x, --maxfail?): its "
        "remaining tests are missing"]
