"""Shared fixtures: each backend and raw HF model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

from pytest_interp.backends.architectures import FAMILIES
from pytest_interp.backends.loading import cache_dir

# pytester points HOME at a temporary directory; keep every session on the one conversion
# cache so the GGUF file is de-quantized once, not once per inner session.
os.environ["PYTEST_INTERP_CACHE_DIR"] = str(cache_dir())

# The test command runs on every core (pyproject's addopts: -n auto). Each worker then uses
# one torch thread, and so do the pytest and init subprocesses it starts (they inherit the
# variable): processes that each use every core slow each other down many times over.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

TINY_SPECS = tuple(f"tiny-random-{family.key}" for family in FAMILIES)  # every family we claim
SPECS = (*TINY_SPECS, "smollm2-135m")
BACKENDS = ("transformer_lens", "nnsight")


@pytest.fixture(scope="session")
def load_backend():
    """``load_backend(spec, backend)``: a cached Backend (each with its own HF instance)."""
    from pytest_interp.backends.load import load_backend as load
    from pytest_interp.settings import ModelRequest

    cache = {}

    def get(spec: str, backend: str = "transformer_lens", **kwargs):
        key = (spec, backend, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = load(ModelRequest(spec, backend, **kwargs))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def load_raw_hf():
    """``load_raw_hf(spec)``: a plain HF model instance no adapter has touched."""
    from pytest_interp.backends.loading import load_hf, resolve_spec

    cache = {}

    def get(spec: str):
        if spec not in cache:
            cache[spec] = load_hf(resolve_spec(spec))
        return cache[spec]

    return get


@pytest.fixture(scope="module")
def smollm2(load_backend):
    """SmolLM2 through the TransformerLens adapter, with a fresh memo per module."""
    from pytest_interp.model import InterpModel

    return InterpModel(load_backend("smollm2-135m", "transformer_lens"))


@pytest.fixture(scope="module")
def smollm2_nnsight(load_backend):
    """SmolLM2 through the nnsight adapter, with a fresh memo per module."""
    from pytest_interp.model import InterpModel

    return InterpModel(load_backend("smollm2-135m", "nnsight"))


@pytest.fixture(scope="session")
def _preloaded_libraries(load_backend):
    """Import torch, TL, nnsight and the model classes once, before any in-process pytester run.

    pytester restores sys.modules after each run, so anything first imported inside one is
    re-imported by the next; objects of the dropped C-extension-backed modules then crash the
    garbage collector (segfault), and every run pays the imports again.
    """
    for spec in ("tiny-random-llama", "tiny-random-gpt2"):
        for backend in ("transformer_lens", "nnsight"):
            model = load_backend(spec, backend)
            model.run(model.tokenize("warm up"))
    import syrupy  # noqa: F401


# The sessions a test starts never use Hypothesis, whose pytest plugin imports it in every
# session's terminal summary: 1.2 s per session on this machine (tests/test_fuzz.py uses it in
# this session, which keeps it).
INNER_ADDOPTS = "-p no:hypothesispytest"


@pytest.fixture(scope="session", autouse=True)
def _not_an_xdist_worker_inside():
    """The sessions a test starts (pytester, subprocesses) are not this worker: syrupy and the
    plugin read PYTEST_XDIST_WORKER from the environment, so it is hidden from them (for the
    whole session: module fixtures start sessions too); and they run without Hypothesis."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT",
                     "PYTEST_XDIST_TESTRUNUID"):
            patch.delenv(name, raising=False)
        patch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)
        yield


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester, with the inner sessions' options (pytester clears PYTEST_ADDOPTS)."""
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)
    return pytester


@pytest.fixture(autouse=True)
def _preload_before_pytester(request):
    """Every test that runs pytest in-process gets the libraries preloaded first."""
    if "pytester" in request.fixturenames:
        request.getfixturevalue("_preloaded_libraries")


# The longest files (measured: minutes each on one core) start first; pyproject's addopts give
# each file to one xdist worker (--dist loadfile), so a module fixture is made once.
FIRST = ("test_init.py", "test_example_suite.py", "test_docs.py", "test_gemma3.py",
         "test_checkpoints.py", "test_ablation_smollm2.py", "test_snapshot.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then slow tests before the others, so that under xdist the
    long ones start early and the short ones fill the gaps at the end (a stable sort: each
    file keeps its order)."""
    def key(item: pytest.Item) -> tuple[int, bool]:
        name = item.path.name
        return (FIRST.index(name) if name in FIRST else len(FIRST),
                item.get_closest_marker("slow") is None)

    items.sort(key=key)
