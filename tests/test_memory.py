"""Memory over a long session: the memo's budget holds (50 distinct prompts, every site read, a
64 MiB budget), and a finished test holds none of its results."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest_plugins = ["pytester"]

SCRIPT = """
import resource
from pytest_interp.backends.load import load_backend
from pytest_interp.model import InterpModel
from pytest_interp.settings import ModelRequest

budget = 64 * 1024**2
model = InterpModel(load_backend(ModelRequest("smollm2-135m")), memory_bytes=budget)
model_bytes = sum(p.numel() * p.element_size() for p in model.backend.bridge.parameters())
model.cache("warm up the allocator once")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = rss()
for i in range(50):
    model.cache(f"Prompt number {i} says something about {i * 7} apples")
    assert model.memo.nbytes <= budget, model.memo.nbytes
print(rss() - base, budget, model_bytes, model.memo.stats.evictions, len(model.memo))
"""


@pytest.mark.slow
def test_peak_rss_stays_within_budget_plus_model_size():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    growth, budget, model_bytes, evictions, kept = map(int, done.stdout.split())
    assert evictions >= 40 and 1 <= kept <= 10  # ~10 MB a run, 8x the budget: it evicts
    assert growth <= budget + model_bytes, (growth / 2**20, budget / 2**20, model_bytes / 2**20)


# Count the results made in this session still alive at its end outside the models' memos
# (pytester runs in this process: results of other tests may be alive, before and after).
COUNT_RESULTS = """
    import gc

    from pytest_interp.plugin import POOL_KEY

    def results():
        gc.collect()
        return [o for o in gc.get_objects() if type(o).__name__.endswith("Result")
                and type(o).__module__.startswith("pytest_interp")]

    BEFORE = set()

    def pytest_sessionstart(session):
        BEFORE.update(id(o) for o in results())

    def pytest_sessionfinish(session):
        memo = {id(value) for model in session.config.stash[POOL_KEY].loaded()
                for value, _ in model.memo._results.values()}
        alive = [o for o in results() if id(o) not in BEFORE | memo]
        print(f"RESULTS ALIVE {len(alive)}")
"""


def test_a_finished_test_holds_none_of_its_results(pytester):
    pytester.makeconftest(COUNT_RESULTS)
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.parametrize("n", range(4))
        @pytest.mark.lens("The capital of France is", " Paris", layer=-1, top_k=50000)
        @pytest.mark.logit_diff("The capital of France is", answer=" Paris", foil=" London",
                                min=-1000)
        def test_markers(n):
            pass

        def test_api(interp_model):
            interp_model.lens("The capital of Spain is")
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama", "-s")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["*RESULTS ALIVE 0"])


def test_large_blocks_are_mapped_unless_the_user_set_the_threshold():
    script = "from pytest_interp.memo import RunMemo, map_large_blocks; RunMemo(); " \
             "print(map_large_blocks())"
    for env, said in (({}, "True"), ({"MALLOC_MMAP_THRESHOLD_": "65536"}, "False")):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                              env={**os.environ, **env}, check=True)
        assert done.stdout.strip() == said


# -- batches split to stay within --interp-memory -----------------------------------------

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def test_a_row_is_estimated_from_the_models_shape():
    from pytest_interp.backends.base import ModelInfo
    from pytest_interp.backends.memory import row_bytes, rows_within

    smollm2 = ModelInfo("m", "r", "LlamaForCausalLM", n_layers=30, n_heads=9, d_model=576,
                        d_vocab=49152, n_ctx=8192, dtype="float32", device="cpu",
                        backend="transformer_lens")
    # 20 positions x ((8 + 2 x 30) x 576 + 9 x 20) + one position's logits, 4 bytes each
    assert row_bytes(smollm2, 20, 1) == (20 * (68 * 576 + 180) + 49152) * 4 == 3_344_448
    assert rows_within(smollm2, 2 * 2**30, 20, 64) == 64
    assert rows_within(smollm2, 32 * 2**20, 20, 64) == 10
    assert rows_within(smollm2, 1, 20, 64) == 1  # never none


def test_a_sweep_split_for_memory_equals_the_whole_batch(load_backend):
    from pytest_interp.model import InterpModel

    backend = load_backend("tiny-random-llama")
    whole = InterpModel(backend).activation_patching(CLEAN, CORRUPTED, answer=" Mary",
                                                     foil=" John")
    small = InterpModel(backend, memory_bytes=2**20)
    split = small.activation_patching(CLEAN, CORRUPTED, answer=" Mary", foil=" John")
    assert small.memo.stats.split == 1
    assert abs(split.recovery - whole.recovery).max() < 1e-5  # batched rows' float sums


def test_a_split_is_said_in_the_summary_and_the_report(pytester):
    pytester.makepyfile(test_m=f"""
        def test_sweep(interp_model):
            interp_model.activation_patching({CLEAN!r}, {CORRUPTED!r}, answer=" Mary",
                                             foil=" John")
    """)
    result = pytester.runpytest("--interp-model=tiny-random-llama", "--interp-memory=1MiB",
                                "--interp-report=r.html")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["interp: tiny-random-llama rev * via transformer_lens: * "
                                 "forward passes, 0 results reused, 1 batch split to stay within "
                                 "--interp-memory, * MiB held"])
    # 11 patched rows: the cells whose clean and corrupted activations differ
    assert ("11 rows ran in passes of 4 to stay within --interp-memory (1 MiB)"
            in (pytester.path / "r.html").read_text())
