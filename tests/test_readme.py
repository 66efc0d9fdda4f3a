"""The README's Python examples run as written: each fenced block is a file of one suite.

A block whose first line is ``# conftest.py`` (or ``# test_<name>.py``, or either in a folder,
``# trained/conftest.py``) becomes that file;
any other block becomes ``test_readme_<n>.py``. The suite runs once on SmolLM2 (snapshots
written with --snapshot-update) and every test in it must pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NAMED = re.compile(r"#\s*((?:\w+/)*(?:conftest|test_\w+)\.py)\b")


def readme_files() -> dict[str, str]:
    """File name -> source, for every Python block of the README."""
    files: dict[str, str] = {}
    for n, block in enumerate(BLOCK.findall(README.read_text(encoding="utf-8"))):
        first = block.splitlines()[0] if block.strip() else ""
        named = NAMED.match(first.strip())
        name = named.group(1) if named else f"test_readme_{n}.py"
        assert name not in files, f"two README blocks are {name}"
        files[name] = block
    return files


def test_readme_has_the_examples_it_promises():
    files = readme_files()
    assert "conftest.py" in files  # the third-party kind
    assert "trained/conftest.py" in files  # a model object the conftest trains
    assert len(files) >= 8


@pytest.mark.slow
def test_every_readme_example_runs_on_smollm2(pytester):
    for name, source in readme_files().items():
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    pytester.makeini("[pytest]\ninterp_model = smollm2-135m\naddopts = --strict-markers\n")
    # (noise floors would load three more SmolLM2 variants: tests/test_variants.py has them)
    result = pytester.runpytest("--snapshot-update", "--interp-noise-floor=none", "-p",
                                "no:cacheprovider")
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, \
        result.stdout.str()[-6000:]
    assert outcomes["passed"] >= 10
