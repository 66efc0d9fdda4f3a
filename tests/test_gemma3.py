"""The second real model: Gemma-3-270M's example suite passes, by alias and by its GGUF path, and
the suite ``init`` writes for it passes on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .test_init import lint

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "example_suites" / "gemma3"


def _suite(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", str(SUITE), "-p", "no:cacheprovider",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=1200)


@pytest.mark.slow
def test_gemma3_example_suite_passes_by_alias():
    done = _suite()
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout
    assert "interp: gemma3-270m rev " in done.stdout


@pytest.mark.slow
def test_a_gemma_gguf_path_works_too():
    from pytest_interp.backends.loading import gguf_file, resolve_spec

    path = gguf_file(resolve_spec("gemma3-270m"))  # the file the alias assembles
    assert resolve_spec(str(path)).kind == "gguf"
    done = _suite(f"--interp-model={path}", "-k", "facts or architecture")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout and "(Gemma3ForCausalLM, 18 layers)" in done.stdout


@pytest.mark.slow
def test_init_on_gemma3_writes_a_suite_that_passes_on_it(tmp_path):
    # Two parts on 8 IOI prompts keep this to CI's budget; the full run's numbers are in
    # docs/init.md.
    out = tmp_path / "interp"
    done = subprocess.run([sys.executable, "-m", "pytest_interp", "init", "--model",
                           "gemma3-270m", "--out", str(out), "--parts", "ioi,heads",
                           "--ioi-prompts", "8", "--no-snapshots"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    assert "init: the suite passes on gemma3-270m: 2 passed" in done.stderr
    text = (out / "test_interp.py").read_text()
    assert '@pytest.mark.attention(kind="induction", head=(5, 1), min_score=' in text
    lint(out)
