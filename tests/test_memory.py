"""The memo's memory budget holds: 100 distinct prompts, every site read, a 64 MiB budget."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
for i in range(100):
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
    assert evictions >= 90 and 1 <= kept <= 10  # ~10 MB a run: it evicts, never grows
    assert growth <= budget + model_bytes, (growth / 2**20, budget / 2**20, model_bytes / 2**20)
