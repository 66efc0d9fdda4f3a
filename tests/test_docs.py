"""The documentation runs as written: README.md's and docs/**/*.md's Python examples, the CLI
page's help texts, the CI page's workflow and the README's links.

Every fenced Python block of every page is a file of one suite. A block whose first line is
``# conftest.py`` (or ``# test_<name>.py``, or either in a folder, ``# trained/conftest.py``)
becomes that file; any other block becomes ``test_docs_<page>_<n>.py``. File names are unique
across pages. The suite runs once, as one session on SmolLM2 (snapshots written with
--snapshot-update), and every test in it must pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NAMED = re.compile(r"#\s*((?:\w+/)*(?:conftest|test_\w+)\.py)\b")

# The README's 17 examples before the documentation site took them in: each still runs.
BEFORE = (
    "test_first.py", "test_init_excerpt.py", "trained/conftest.py", "trained/test_trained.py",
    "test_load_hf_example.py", "test_lens_example.py", "test_patching_example.py",
    "test_attribution_example.py", "test_ablation_example.py", "test_patchscope_example.py",
    "test_steering_example.py", "test_attention_example.py", "test_dataset_example.py",
    "test_behaviour_example.py", "conftest.py", "test_norm_example.py",
    "test_snapshot_example.py",
)


def pages() -> list[Path]:
    """README.md, then every page of the site in path order."""
    return [README, *sorted(DOCS.rglob("*.md"))]


def page_name(page: Path) -> str:
    """``readme``, or the page's path under docs/ as an identifier (``kinds_lens``)."""
    if page == README:
        return "readme"
    return re.sub(r"\W", "_", page.relative_to(DOCS).with_suffix("").as_posix())


def doc_files() -> dict[str, str]:
    """File name -> source, for every Python block of every page."""
    files: dict[str, str] = {}
    where: dict[str, Path] = {}
    for page in pages():
        for n, block in enumerate(BLOCK.findall(page.read_text(encoding="utf-8"))):
            first = block.splitlines()[0] if block.strip() else ""
            named = NAMED.match(first.strip())
            name = named.group(1) if named else f"test_docs_{page_name(page)}_{n}.py"
            assert name not in files, f"{page} and {where[name]} both have a block {name}"
            files[name], where[name] = block, page
    return files



def test_docs_have_the_examples_they_promise():
    files = doc_files()
    assert "conftest.py" in files  # the third-party kind
    assert "trained/conftest.py" in files  # a model object the conftest trains
    assert len(files) >= 8
    missing = [name for name in BEFORE if name not in files]
    assert not missing, f"README examples no page runs any more: {missing}"


@pytest.mark.slow
def test_every_docs_example_runs_on_smollm2(pytester):
    files = doc_files()
    # the dictionary the features page names, as `sae/resid_post_15` beside the examples
    shutil.copytree(ROOT / "example_suites" / "smollm2" / "sae", pytester.path / "sae",
                    ignore=shutil.ignore_patterns("*.py"))
    for name, source in files.items():
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
    tests = sum(len(re.findall(r"^def test_", source, re.M)) for source in files.values())
    assert outcomes["passed"] == tests, result.stdout.str()[-6000:]


# -- the CLI page ---------------------------------------------------------------------------

HELP = re.compile(r"^```text\n\$ pytest-interp ((?:[\w-]+ )*)--help\n(.*?)^```", re.S | re.M)


def cli_help_blocks() -> dict[tuple[str, ...], str]:
    """Arguments -> the help text docs/cli.md shows for ``pytest-interp ARGS --help``."""
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    return {tuple(args.split()): shown for args, shown in HELP.findall(text)}


def test_cli_page_shows_the_help_every_command_prints_now():
    from pytest_interp.cli import COMMANDS

    blocks = cli_help_blocks()
    assert set(blocks) >= {(), *((name,) for name in COMMANDS), ("lens", "train")}
    script = Path(sys.executable).with_name("pytest-interp")
    env = {**os.environ, "COLUMNS": "100"}  # argparse wraps to the terminal's width
    for args, shown in blocks.items():
        printed = subprocess.run([str(script), *args, "--help"], capture_output=True,
                                 text=True, env=env, check=True).stdout
        assert shown == printed, (f"docs/cli.md is stale for `pytest-interp {' '.join(args)} "
                                  f"--help`: paste what it prints (COLUMNS=100)")


# -- the CI page and the README's links ------------------------------------------------------

def test_ci_page_shows_the_workflow_files_as_they_are():
    page = (DOCS / "ci.md").read_text(encoding="utf-8")
    for name in ("github-actions.yml", "github-actions-shards.yml"):
        workflow = ROOT / "example_suites/induction_checkpoints" / name
        assert f"```yaml\n{workflow.read_text(encoding='utf-8')}```" in page


def test_readme_stays_short_and_links_pages_that_exist():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150  # the rest: docs/
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", README.read_text(encoding="utf-8"))
    local = [link for link in links if "://" not in link]
    assert local, "the README links no page of the docs"
    assert [link for link in local if not (ROOT / link).exists()] == []
