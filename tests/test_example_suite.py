"""The main job: the SmolLM2 example suite passes as the README runs it, and writes its report."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smollm2_example_suite_is_green_and_writes_the_report(tmp_path):
    report = tmp_path / "smollm2.html"
    snapshots = ROOT / "example_suites" / "smollm2" / "__snapshots__" / "test_snapshots.interp"
    before = snapshots.read_bytes()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "example_suites/smollm2", "-p", "no:cacheprovider",
         f"--interp-report={report}"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    wall = time.perf_counter() - start
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed in " in done.stdout and "failed" not in done.stdout.splitlines()[-1]
    assert "6 snapshots passed." in done.stdout
    assert snapshots.read_bytes() == before
    page = report.read_text()
    assert page.count("<section class='passed'") >= 19
    assert "L18H6 induction" in page
    print(f"example suite: {wall:.1f}s wall")
