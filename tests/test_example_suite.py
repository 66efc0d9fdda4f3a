"""The main job: the SmolLM2 example suite passes as the README runs it, and writes its report;
no test of it is vacuous under controls; under ``-n 2`` it has the same outcomes and re-creates
snapshots that compare equal."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "example_suites" / "smollm2"
SNAPSHOTS = SUITE / "__snapshots__" / "test_snapshots.interp"


def _outcomes(junit: Path) -> dict[str, str]:
    """Test id -> passed / failed / error / skipped, from a JUnit XML file."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = (
            {"failure": "failed"}.get(kinds[0], kinds[0]) if kinds else "passed")
    return outcomes


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, str], Path, str]:
    """The suite run as the README runs it, with --interp-controls: outcomes, report path,
    stdout. Controls only add checks (a passing marker checked again on a re-initialised
    model, VACUOUS if it still passes), so the README's run passes if this one does, and one
    session serves both tests (the plain run cost 85 s more of CI)."""
    tmp = tmp_path_factory.mktemp("serial")
    report, junit = tmp / "smollm2.html", tmp / "junit.xml"
    before = SNAPSHOTS.read_bytes()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "example_suites/smollm2", "-p", "no:cacheprovider",
         "--interp-controls", f"--interp-report={report}", f"--junitxml={junit}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    print(f"example suite, serial with controls: {time.perf_counter() - start:.1f}s wall")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert SNAPSHOTS.read_bytes() == before
    return _outcomes(junit), report, done.stdout


@pytest.mark.slow
def test_smollm2_example_suite_is_green_and_writes_the_report(serial_run):
    outcomes, report, stdout = serial_run
    assert " passed in " in stdout and "failed" not in stdout.splitlines()[-1]
    assert "6 snapshots passed." in stdout
    assert len(outcomes) >= 19 and set(outcomes.values()) == {"passed"}
    page = report.read_text()
    assert page.count('<section class="test passed"') >= 19
    assert "L18H6 induction" in page


def _snapshots(path: Path) -> dict[str, str]:
    """Snapshot name -> stored text, from an .interp file."""
    from syrupy.extensions.amber.serializer import AmberDataSerializer

    return {s.name: s.data for s in AmberDataSerializer.read_file(str(path))}


@pytest.mark.slow
def test_two_workers_match_serial_and_recreate_equal_snapshots(serial_run, tmp_path):
    """`-n 2` from scratch: same pass/fail set as serial; the snapshots it creates compare
    equal, under the snapshot rules, to the committed (serially created) ones. Not byte for
    byte: each worker runs one torch thread where the serial run used two, float sums depend
    on the thread count, and the committed file may come from another CPU (byte identity
    under equal conditions is tests/test_snapshot.py's)."""
    from pytest_interp.snapshot import Tolerances, compare, is_ours, parse

    suite = tmp_path / "smollm2"
    shutil.copytree(SUITE, suite, ignore=shutil.ignore_patterns("report", "__pycache__"))
    shutil.rmtree(suite / "__snapshots__")
    junit = tmp_path / "junit.xml"
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", ".", "-n", "2", "-p", "no:cacheprovider",
         "--snapshot-update", "--interp-noise-floor=none", f"--junitxml={junit}"],
        cwd=suite, capture_output=True, text=True, timeout=900,
    )
    print(f"example suite, -n 2 from scratch: {time.perf_counter() - start:.1f}s wall")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "6 snapshots generated." in done.stdout
    assert _outcomes(junit) == serial_run[0]
    created = _snapshots(suite / "__snapshots__" / "test_snapshots.interp")
    committed = _snapshots(SNAPSHOTS)
    assert sorted(created) == sorted(committed)
    for name, text in committed.items():
        if is_ours(text):
            assert compare(parse(text), parse(created[name]), Tolerances()) == [], name
        else:  # plain data (a generated text): exact
            assert created[name] == text, name


@pytest.mark.slow
def test_no_example_test_is_vacuous_under_controls(serial_run):
    """--interp-controls re-checks every marker on a re-initialised SmolLM2: every example
    test depends on what the model learned, so none is VACUOUS (and the outcomes hold)."""
    outcomes, _, stdout = serial_run
    assert set(outcomes.values()) == {"passed"}
    assert "VACUOUS" not in stdout and "vacuous" not in stdout
    assert "re-initialised control (--interp-controls)" in stdout
