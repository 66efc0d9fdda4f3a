"""Collection is static; kinds are one registry; probes do not know the model facade."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from pytest_interp.errors import InterpError
from pytest_interp.registry import KINDS, KindRegistry

from .pytester_helpers import ini
from .test_docs import doc_files

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "example_suites" / "smollm2"

# Counts model loads and forward passes in a pytest subprocess, and says so at the end.
LOAD_PROBE = """
import sys

import pytest

CALLS = []


def pytest_configure(config):
    from pytest_interp import pool
    from pytest_interp.backends import loading

    load = loading.load_hf
    loading.load_hf = lambda *a, **k: CALLS.append("load_hf") or load(*a, **k)
    pool_get = pool.ModelPool.get
    pool.ModelPool.get = lambda self, r: CALLS.append("pool") or pool_get(self, r)


def pytest_unconfigure(config):
    transformers = "transformers" in sys.modules
    print(f"PROBE calls={CALLS} transformers={transformers}")
"""


@pytest.mark.slow
def test_collect_only_loads_no_model_and_writes_no_report(pytester):
    for name in ("test_smollm2.py", "test_snapshots.py", "pytest.ini", "reviews.jsonl",
                 "texts.txt", "texts_reversed.txt"):
        shutil.copy(SUITE / name, pytester.path / name)
    pytester.makepyfile(load_probe=LOAD_PROBE)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "-p", "load_probe")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*tests collected*", "PROBE calls=[] transformers=False"])
    assert "interp: smollm2-135m rev" not in result.stdout.str()  # no model summary line
    assert not (pytester.path / "report").exists()
    # -k: a deselected marker test loads nothing; the selected plain test does
    result = pytester.runpytest_subprocess("-p", "load_probe", "-k", "absent_from_the_early")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["PROBE calls=['pool', 'load_hf'] transformers=True"])


def test_a_near_miss_of_our_marker_names_the_right_one(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.lense("The cat sat", " on", layer=-1, top_k=1)
        def test_x():
            pass

        @pytest.mark.slowish
        def test_y():
            pass
    """)
    result = pytester.runpytest("-W", "ignore::pytest.PytestUnknownMarkWarning")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([
        "test_m.py::test_x: @pytest.mark.lense is not a marker: did you mean @pytest.mark.lens?",
    ])
    assert "test_y" not in result.stdout.str()  # a mark unlike ours is pytest's business


def test_example_suites_use_strict_markers():
    for suite in ("smollm2", "induction_checkpoints"):
        text = (ROOT / "example_suites" / suite / "pytest.ini").read_text()
        assert "--strict-markers" in text, suite


def test_no_probe_imports_the_model_facade():
    """Probes are written against the Runner interface (not even under TYPE_CHECKING)."""
    for path in sorted((ROOT / "pytest_interp" / "probes").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = {a.name for a in node.names}
                assert module not in ("..model", "pytest_interp.model") and not (
                    module == ".." and "model" in names), f"{path.name} imports the model"


def test_each_kind_is_one_module_with_one_registry_entry():
    for kind in KINDS:
        module = kind.expectation.__module__
        assert module.startswith("pytest_interp.kinds."), kind.name
        assert kind.marker.usage.startswith(f"@pytest.mark.{kind.name}(")
        if kind.codec is not None:
            assert type(kind.codec).__module__ == module
        if kind.figure is not None:
            assert kind.figure.__module__ == module


def test_registry_refuses_clashes():
    registry = KindRegistry()
    lens = KINDS["lens"]
    registry.register(lens)
    with pytest.raises(InterpError, match=r"^an expectation kind named 'lens' is already"):
        registry.register(lens)
    with pytest.raises(InterpError, match=r"^register an ExpectationKind, not str"):
        registry.register("lens")  # type: ignore[arg-type]


def test_a_conftest_kind_works_like_ours_and_leaves_with_its_session(pytester):
    """The README's `norm` kind, on the tiny model: marker, failure text, snapshot, --markers."""
    files = doc_files()
    pytester.makeconftest(files["conftest.py"])
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.norm("The cat sat", layer=-1, min=0)
        def test_pass():
            pass

        @pytest.mark.norm("The cat sat", layer=0, max=0)
        def test_fail():
            pass

        @pytest.mark.norm("The cat sat", layer=7, min=0)
        def test_bad_layer():
            pass

        def test_snapshot(norms, interp_snapshot):
            assert interp_snapshot == norms("The cat sat")
    """)
    result = pytester.runpytest("--snapshot-update")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "norm: the residual norm after block 0 is *, expected [[]None, 0[]]",
    ])
    result.stdout.fnmatch_lines([
        "@pytest.mark.norm: layer 7 is out of range for tiny-random-llama with 3 layers: use "
        "0..2 (or -3..-1 from the end)",
    ])
    stored = (pytester.path / "__snapshots__" / "test_m.interp").read_text()
    assert "pytest-interp snapshot v1: norm of tiny-random-llama" in stored
    assert pytester.runpytest("-k", "snapshot").ret == 0
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.norm(prompt, *, layer, min=None, max=None, "
                                 "prompts=None, stat='mean', confidence=0.95, "
                                 "min_fraction=None, interval='percentile'): "
                                 "assert the residual norm after block layer lies within "
                                 "[[]min, max[]]."])
    assert "norm" not in KINDS  # unregistered when the session ended
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.norm("The cat sat", layer=0)
        def test_x():
            pass
    """)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["test_m.py::test_x: @pytest.mark.norm: no check given: pass "
                                 "min= and/or max="])
