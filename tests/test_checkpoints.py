"""The CI-on-checkpoints recipe end to end: train once, run the suite over all 9 checkpoints
in one session against the first as baseline, in three shards merged into the same results
(the sharded recipe's commands), and bisect the series."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_interp.bisect import BisectError, Probe, bisect

pytest_plugins = ["pytester"]

SUITE = Path(__file__).resolve().parents[1] / "example_suites" / "induction_checkpoints"
STEPS = [f"step_{step:05d}" for step in range(0, 401, 50)]


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """train.py's default series: 400 steps, a checkpoint every 50 (seeded, ~10 s)."""
    out = tmp_path_factory.mktemp("series") / "ckpt"
    subprocess.run([sys.executable, str(SUITE / "train.py"), "--out", str(out), "--steps", "400"],
                   check=True, capture_output=True, timeout=600)
    assert sorted(p.name for p in out.iterdir()) == STEPS
    return out


@pytest.fixture
def suite(pytester):
    for name in ("test_induction.py", "pytest.ini"):
        shutil.copy(SUITE / name, pytester.path / name)
    return pytester


def _outcomes(result, test: str) -> dict[str, str]:
    """step -> PASSED / FAILED of ``test`` in a -v run."""
    found = {}
    for line in result.stdout.lines:
        match = re.match(rf"test_induction.py::{test}\[(step_\d+)\] (PASSED|FAILED)", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.mark.slow
def test_one_session_runs_the_suite_on_every_checkpoint(suite, series):
    report = suite.path / "report.html"
    result = suite.runpytest(f"--interp-model={series}/step_*",
                             f"--interp-baseline={series / 'step_00000'}", "-v",
                             f"--interp-report={report}", "--interp-results=whole.jsonl")
    head = _outcomes(result, "test_an_induction_head_exists")
    summary = _outcomes(result, "test_attention_summary")
    assert list(head) == list(summary) == STEPS  # in step order, each model's tests together
    # The marker fails until the head forms, then passes from that step on.
    formed = next(step for step in STEPS if head[step] == "PASSED")
    assert 0 < STEPS.index(formed) < len(STEPS) - 1
    assert all(head[s] == ("PASSED" if s >= formed else "FAILED") for s in STEPS)
    # The baseline passes against itself; trained checkpoints changed from it.
    assert summary["step_00000"] == "PASSED" and summary["step_00400"] == "FAILED"
    result.stdout.fnmatch_lines([
        f"attention of {formed} changed from baseline {series / 'step_00000'} beyond the noise "
        "floor*",
        "  L1H?: induction 0.0* -> * (label mixed -> induction)",
    ])
    # Seeded training is not bit-identical across CPUs: bound the trained score, not digits.
    line = next(x for x in result.stdout.lines if "(label mixed -> induction)" in x)
    assert float(line.split(" -> ")[1].split()[0]) >= 0.9, line
    # The report: the trend of the highest induction score across steps crosses the bound
    # where the marker starts passing; the grid shows the same outcomes.
    page = report.read_text()
    chart = next(f for f in page.split('<figure class="trend">')
                 if f.startswith("<figcaption>test_induction.py::test_an_induction_head_exists"))
    trend = re.findall(r"<title>(step_\d+): ([-\d.e]+) \((passed|failed)\)</title>", chart)
    assert [step for step, _, _ in trend] == STEPS
    scores = {step: float(value) for step, value, _ in trend}
    assert all((scores[s] >= 0.5) == (s >= formed) for s in STEPS), scores
    assert scores["step_00400"] > 0.9 > 0.1 > scores["step_00000"]
    row = re.search(r"<tr><td>test_induction.py::test_an_induction_head_exists</td>(.*?)</tr>",
                    page).group(1)
    assert re.findall(r'<td class="(\w+)">', row) == [head[s].lower() for s in STEPS]
    _drawn_in_chromium(report, [head[s] == "PASSED" for s in STEPS])
    result.stdout.fnmatch_lines([
        f"interp: models {', '.join(STEPS)} (each test that uses a model runs on each), "
        f"baseline {series / 'step_00000'}, backend *",
        "interp: step_00050 rev * (LlamaForCausalLM, 2 layers) via transformer_lens: *released "
        "after its tests",
    ])
    # The session's results file already answers bisect, with no session run.
    read = _bisect(suite.path, "--results", "whole.jsonl", "--find", "pass", "--select",
                   "induction_head_exists")
    assert read.stdout.splitlines()[-1].startswith(
        f"bisect: first model that passes: {formed} ("), read.stdout + read.stderr
    _the_sharded_recipe_merges_into_the_same(suite, series, report)


def _drawn_in_chromium(report: Path, passing: list[bool]) -> None:
    """The trend chart is drawn left to right, rising, green where the marker passes; the
    grid's marker row links every step."""
    from selenium.webdriver.common.by import By

    from .test_browser import _chromium, _need_browser

    _need_browser()
    driver = _chromium()
    try:
        driver.get(report.as_uri())
        chart = driver.find_element(By.CSS_SELECTOR, "svg.trend")
        circles = chart.find_elements(By.TAG_NAME, "circle")
        xs = [float(c.get_attribute("cx")) for c in circles]
        ys = [float(c.get_attribute("cy")) for c in circles]
        assert xs == sorted(xs) and ys[-1] < ys[0]  # SVG y grows downwards: the score rose
        assert [c.get_attribute("fill") == "rgb(58,157,74)" for c in circles] == passing
        grid = driver.find_element(By.ID, "grid")
        assert len(grid.find_elements(By.CSS_SELECTOR, "td a")) == 3 * len(passing)  # 3 tests
    finally:
        driver.quit()


def _bisect(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest_interp", "bisect", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_bisect_finds_where_the_head_formed_and_the_first_change(suite, series):
    everything = suite.runpytest(f"--interp-model={series}/step_*", "-v",
                                 f"--interp-baseline={series / 'step_00000'}")
    head = _outcomes(everything, "test_an_induction_head_exists")
    formed = next(step for step in STEPS if head[step] == "PASSED")
    changed = next(step for step in STEPS
                   if _outcomes(everything, "test_attention_summary")[step] == "FAILED")

    found = _bisect(suite.path, "--models", f"{series}/step_*", "--find", "pass", "--",
                    "-k", "induction_head")
    assert found.returncode == 0, found.stderr
    lines = found.stdout.splitlines()
    budget = math.ceil(math.log2(9)) + 1
    assert lines[0] == (f"bisect: 9 models, step_00000 ... step_00400: the first that passes, "
                        f"in at most {budget} sessions")
    assert lines[1].startswith(f"bisect: [1/{budget}] step_00400: passes (1 passed, "
                               "2 deselected")
    assert 2 <= len(lines) - 2 <= budget  # one line per session, then the answer
    previous = STEPS[STEPS.index(formed) - 1]
    assert lines[-1] == (f"bisect: first model that passes: {series / formed} ({previous} "
                         f"fails); {len(lines) - 2} sessions")

    first = _bisect(suite.path, "--models", f"{series}/step_*", "--", "-k", "attention_summary",
                    f"--interp-baseline={series / 'step_00000'}")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1].startswith(
        f"bisect: first model that fails: {series / changed} (")
    assert len(first.stdout.splitlines()) - 2 <= budget


@pytest.mark.slow
def test_bisect_says_when_the_last_model_does_not_fail(suite, series):
    done = _bisect(suite.path, "--models", str(series / "step_00000"), str(series / "step_00050"),
                   "--", "-k", "attention_summary")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"bisect: the last model, {series / 'step_00050'}, does not fail: nothing to bisect "
        "(bisect looks for the first model that fails; the last must)"]


@pytest.mark.parametrize("n", range(2, 20))
def test_bisect_takes_at_most_ceil_log2_n_plus_one_sessions(n):
    specs = [f"m{i}" for i in range(n)]
    for flip in range(n):
        def session(spec: str, flip: int = flip) -> Probe:
            return Probe(spec, "fail" if int(spec[1:]) >= flip else "pass", "")

        found, probes = bisect(specs, "fail", session, lambda line: None)
        assert found == specs[flip]
        assert len(probes) <= math.ceil(math.log2(n)) + 1


def test_bisect_refuses_a_series_whose_last_model_passes():
    with pytest.raises(BisectError, match="the last model, m2, does not fail"):
        bisect(["m0", "m1", "m2"], "fail", lambda spec: Probe(spec, "pass", ""), print)


RECIPE = SUITE / "github-actions-shards.yml"


def _recipe_commands(series: Path) -> tuple[str, str]:
    """The sharded recipe's pytest and merge commands, as the jobs run them, for this
    machine: the checkpoints are ``series``, ``pytest`` is this interpreter's."""
    import yaml

    jobs = yaml.safe_load(RECIPE.read_text())["jobs"]
    runs = [step["run"] for job in ("shard", "merge") for step in jobs[job]["steps"]
            if "run" in step and not step["run"].startswith("pip ")]
    shard, merge = runs
    assert jobs["shard"]["strategy"]["matrix"]["shard"] == [1, 2, 3]
    shard = shard.replace("pytest ", f"{sys.executable} -m pytest -p no:cacheprovider ", 1)
    shard = shard.replace("example_suites/induction_checkpoints", ".")
    shard = shard.replace("checkpoints/", f"{series}/")
    merge = merge.replace("pytest-interp ", f"{sys.executable} -m pytest_interp ", 1)
    return shard, merge


def _calls(path: Path) -> dict[str, tuple]:
    """Test id -> (outcome, measured values, trend points, model) from a results file."""
    import json

    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {row["nodeid"]: (row["outcome"], row["record"]["measured"], row["record"]["points"],
                            row["record"]["model"])
            for row in rows if row.get("type") == "test" and row["when"] == "call"}


def _the_sharded_recipe_merges_into_the_same(suite: pytest.Pytester, series: Path,
                                             report: Path) -> None:
    """github-actions-shards.yml's commands, run here: three shards of the 9 checkpoints (each
    loads its own and the baseline), then merge. The merged results have the one session's
    outcomes, measured values and trend points, and the report its test x checkpoint grid;
    merging two of the three names the third as missing and exits 1."""
    import shlex

    shard, merge = _recipe_commands(series)
    cwd = suite.path
    for i in (1, 2, 3):
        args = shlex.split(shard.replace("${{ matrix.shard }}", str(i)))
        result = suite.runpytest(*args[3:])  # in this process: `python -m pytest` dropped
        assert result.ret in (0, 1), result.stdout.str()[-3000:]  # early steps fail
        loaded = {line.split()[1] for line in result.stdout.lines
                  if line.startswith("interp: step_")}
        assert loaded == {step for k, step in enumerate(STEPS) if k % 3 == i - 1} | \
            {"step_00000"}, loaded
    merged = {}
    for i in (1, 2, 3):
        merged.update(_calls(cwd / f"shard-{i}.jsonl"))
    assert merged == _calls(cwd / "whole.jsonl")
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(cwd / "summary.md")}
    done = subprocess.run(shlex.split(merge), cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr  # the early checkpoints fail, as in one session
    assert "missing" not in done.stderr
    grid = re.compile(r"<tr><td>test_induction.py::test_an_induction_head_exists</td>(.*?)</tr>")
    cells = [re.findall(r'<td class="(\w+)">', grid.search(page).group(1))
             for page in ((cwd / "interp-report.html").read_text(), report.read_text())]
    assert cells[0] == cells[1] and len(cells[0]) == len(STEPS)
    assert "step_00400" in (cwd / "summary.md").read_text()
    (cwd / "shard-2.jsonl").unlink()
    part = subprocess.run(shlex.split(merge), cwd=cwd, env=env, capture_output=True, text=True)
    assert part.returncode == 3 and "merge: shard 2/3 is missing" in part.stderr.splitlines()
    assert "MERGE PROBLEM: shard 2/3 is missing" in (cwd / "interp-report.html").read_text()


@pytest.mark.slow
def test_the_circuit_drifts_towards_the_final_checkpoints(suite, series):
    """Against the final checkpoint as baseline, each step's ten-edge induction circuit is
    charted by its Jaccard with the final one: low before the circuit forms, high after."""
    report = suite.path / "drift.html"
    result = suite.runpytest(f"--interp-model={series}/step_*", "-k", "circuit",
                             f"--interp-baseline={series / 'step_00400'}",
                             f"--interp-report={report}")
    page = report.read_text()
    chart = next(f for f in page.split('<figure class="trend">')
                 if "test_ten_edges_carry_induction" in f and "Jaccard vs baseline" in f)
    trend = re.findall(r"<title>(step_\d+): ([-\d.e]+) \((passed|failed)\)</title>", chart)
    jaccard = {step: float(value) for step, value, _ in trend}
    assert list(jaccard) == STEPS[:-1], jaccard  # the baseline is not compared with itself
    assert jaccard["step_00000"] < 0.5 < 0.8 <= jaccard["step_00350"], jaccard
    assert "vs step_00400: Jaccard " in page  # the figure of each step names the comparison
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # early steps have no circuit yet
