"""Soak: memory over long sessions, on SmolLM2. Run alone (it uses both cores).

1. A generated suite of 2,000 marker tests (next_token, lens and logit_diff markers on 2,000
   distinct prompts) in one session, then under ``-n 2``: the peak RSS of the session (the
   largest worker's under -n 2), against the bound it should hold: the float32 weights plus the
   memo budget (--interp-memory, 2 GiB by default) plus 1.5 GiB for torch, transformers and the
   tokenizer.
2. A series of 8 SmolLM2-sized checkpoints (seeded 1e-3 noise on SmolLM2, handed over by a
   conftest) in one session: the resident memory when each model's first test starts, against
   the first model's (each must be within 10% of it: a released model frees its memory).

    python benchmarks/soak.py [--tests 2000] [--checkpoints 8]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("river", "garden", "window", "music", "winter", "letter", "market", "forest", "doctor",
         "engine", "island", "silver", "candle", "bridge", "planet", "tiger", "coffee", "mirror",
         "pencil", "castle")

MARKERS = (  # every one holds on any model: the soak measures memory, not verdicts
    '@pytest.mark.logit_diff({p!r}, answer=" the", foil=" a", min=-1000)',
    '@pytest.mark.lens({p!r}, " the", layer=-1, top_k=50000)',
    '@pytest.mark.next_token({p!r}, " the", top_k=50000)',
)


def suite(prompts: list[str]) -> str:
    """One test per prompt, each with one marker (kinds in turn)."""
    tests = [f"{MARKERS[i % 3].format(p=p)}\ndef test_{i}():\n    pass\n"
             for i, p in enumerate(prompts)]
    return "import pytest\n\n\n" + "\n\n".join(tests)


SERIES = '''
import torch

from pytest_interp.backends.loading import load_hf, resolve_spec


def pytest_interp_load_model(spec, request):
    if not spec.startswith("noisy:"):
        return None
    loaded = load_hf(resolve_spec("smollm2-135m"))
    g = torch.Generator().manual_seed(int(spec.split(":")[1]))
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=g))
    return loaded.model, loaded.tokenizer
'''

SERIES_TEST = '''
import psutil


def test_rss(interp_model):
    rss = psutil.Process().memory_info().rss
    print(f"SOAK {interp_model.info.name} rss {rss}")
    assert interp_model.logit_diff("The capital of France is", " Paris", " London") > 0
'''


def prompts(n: int) -> list[str]:
    """``n`` distinct short prompts (so no result is reused)."""
    out = []
    for i in range(n):
        a, b, c = WORDS[i % 20], WORDS[(i // 20) % 20], WORDS[(i // 400) % 20]
        out.append(f"The {a} near the {b} and the {c} is number {i} of")
    return out


def run(folder: Path, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS of the largest process, stdout) of one pytest session."""
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "-s", *args], cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1]) * 1024
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    return wall, peak, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--checkpoints", type=int, default=8)
    args = parser.parse_args()
    weights = 134_515_008 * 4  # SmolLM2-135M in float32
    bound = weights + 2 * 2**30 + int(1.5 * 2**30)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "pytest.ini").write_text("[pytest]\ninterp_model = smollm2-135m\n")
        (folder / "test_soak.py").write_text(suite(prompts(args.tests)))
        for extra in ([], ["-n", "2"]):
            wall, peak, out = run(folder, *extra)
            passed = re.search(r"(\d+) passed", out)[1]
            print(f"soak: {passed} marker tests on SmolLM2{' under -n 2' if extra else ''}: "
                  f"{wall:.0f} s, peak RSS {peak / 2**30:.2f} GiB (bound {bound / 2**30:.2f} "
                  f"GiB: weights + memo budget + 1.5 GiB){'' if peak <= bound else ' OVER'}")
        series = folder / "series"
        series.mkdir()
        (series / "conftest.py").write_text(SERIES)
        (series / "test_series.py").write_text(SERIES_TEST)
        specs = [f"--interp-model=noisy:{i}" for i in range(args.checkpoints)]
        wall, peak, out = run(series, *specs)
        rss = [int(x) for x in re.findall(r"SOAK \S+ rss (\d+)", out)]
        first = rss[0]
        worst = max(abs(r - first) / first for r in rss)
        print(f"soak: a series of {len(rss)} SmolLM2-sized checkpoints: RSS at each model's "
              f"start {', '.join(f'{r / 2**30:.2f}' for r in rss)} GiB; the farthest from the "
              f"first is {worst:.1%} (bound 10%){'' if worst <= 0.10 else ' OVER'}; peak "
              f"{peak / 2**30:.2f} GiB, {wall:.0f} s")


if __name__ == "__main__":
    main()
