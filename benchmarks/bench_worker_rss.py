"""Peak memory per xdist worker on a series: four SmolLM2 checkpoints (each a re-saved copy
with its own 1e-3 noise, 135M parameters in float32) under ``-n 2``, against one session
that holds one of them, in one run.

Run: .venv/bin/python benchmarks/bench_worker_rss.py
Prints each session's peak resident memory (``ru_maxrss``, read at the end of every worker
and of the one-model session) and how many times each model was loaded: with the series
scheduled a model at a time (``Series.pytest_xdist_make_scheduler``) and each model released
after its tests, a worker's peak is one model's, not two or four.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFTEST = '''
import json, os, resource

import torch

from pytest_interp.backends.loading import load_hf, resolve_spec


def pytest_interp_load_model(spec, request):
    if not spec.startswith("ckpt:"):
        return None
    loaded = load_hf(resolve_spec("smollm2-135m"))
    g = torch.Generator().manual_seed(int(spec[5:]))
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g))
    with open("loads.txt", "a") as out:
        out.write(f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')} {spec}\\n")
    return loaded.model, loaded.tokenizer


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    with open(f"rss-{worker}.json", "w") as out:
        json.dump({"worker": worker, "peak_mib": peak}, out)
'''

TESTS = '''
def test_ioi(interp_model):
    assert interp_model.logit_diff(
        "When Mary and John went to the store, John gave a drink to", " Mary", " John") > 0


def test_lens(interp_model):
    interp_model.logit_lens("The capital of France is")
'''


def session(folder: Path, *args: str) -> dict[str, float]:
    for old in folder.glob("rss-*.json"):
        old.unlink()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *args], cwd=folder, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-2000:])
    found = [json.loads(p.read_text()) for p in folder.glob("rss-*.json")]
    return {row["worker"]: row["peak_mib"] for row in found if row["worker"] != "main"} \
        or {row["worker"]: row["peak_mib"] for row in found}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "conftest.py").write_text(CONFTEST)
        (folder / "test_series.py").write_text(TESTS)
        (folder / "pytest.ini").write_text("[pytest]\n")
        start = time.perf_counter()
        one = session(folder, "-p", "no:xdist", "--interp-model=ckpt:1")
        one_s = time.perf_counter() - start
        (folder / "loads.txt").unlink()
        start = time.perf_counter()
        workers = session(folder, "-n", "2", *(f"--interp-model=ckpt:{i}" for i in range(4)))
        series_s = time.perf_counter() - start
        loads = (folder / "loads.txt").read_text().split()
    per_model = {spec: loads[1::2].count(spec) for spec in sorted(set(loads[1::2]))}
    print(f"one session, one SmolLM2 checkpoint: peak {one['main']:.0f} MiB ({one_s:.1f} s)")
    for worker, peak in sorted(workers.items()):
        print(f"-n 2 over 4 checkpoints, worker {worker}: peak {peak:.0f} MiB, "
              f"{peak / one['main']:.2f}x the one-model session")
    print(f"loads per checkpoint under -n 2: {per_model} ({series_s:.1f} s)")


if __name__ == "__main__":
    main()
