"""A checkpoint series in one session vs in three shards: the 9-checkpoint induction series of
``example_suites/induction_checkpoints`` (train.py, 400 steps), its suite against the first
checkpoint as baseline, in one run.

Run: .venv/bin/python benchmarks/bench_shards.py
Prints the wall time of: one session over the series; its three shards one after another
(the same work, split: what a matrix of three jobs costs in all); the three shards at once on
this machine (each with one torch thread, as on three runners sharing its cores); and that the
merged shards have the one session's outcomes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = Path(__file__).resolve().parents[1] / "example_suites" / "induction_checkpoints"


def session(ckpt: Path, out: Path, *extra: str, threads: str | None = None
            ) -> subprocess.Popen[str]:
    env = {**os.environ, **({"OMP_NUM_THREADS": threads} if threads else {})}
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
         f"--interp-model={ckpt}/step_*", f"--interp-baseline={ckpt / 'step_00000'}",
         f"--rootdir={SUITE}", *extra], cwd=out, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, text=True)


def outcomes(path: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {r["nodeid"]: r["outcome"] for r in rows if r.get("type") == "test"}


def main() -> None:
    out = Path(tempfile.mkdtemp())
    subprocess.run([sys.executable, str(SUITE / "train.py"), "--out", str(out / "ckpt"),
                    "--steps", "400"], check=True, capture_output=True)
    ckpt = out / "ckpt"
    start = time.perf_counter()
    session(ckpt, out, f"--interp-results={out / 'whole.jsonl'}").wait()
    one = time.perf_counter() - start
    start = time.perf_counter()
    for i in (1, 2, 3):
        session(ckpt, out, f"--interp-shard={i}/3", f"--interp-results={out / f'a{i}.jsonl'}"
                ).wait()
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    running = [session(ckpt, out, f"--interp-shard={i}/3",
                       f"--interp-results={out / f'b{i}.jsonl'}", threads="1")
               for i in (1, 2, 3)]
    for process in running:
        process.wait()
    parallel = time.perf_counter() - start
    merged: dict[str, str] = {}
    for i in (1, 2, 3):
        merged.update(outcomes(out / f"b{i}.jsonl"))
    same = merged == outcomes(out / "whole.jsonl")
    print(f"9-checkpoint induction series, suite of 2 tests per checkpoint; "
          f"{os.cpu_count()} CPU cores")
    print(f"  one session:                {one:6.1f} s")
    print(f"  3 shards, one after another: {sequential:6.1f} s ({sequential / one:.2f}x: each "
          "shard loads the baseline and starts a session)")
    print(f"  3 shards at once:            {parallel:6.1f} s ({parallel / one:.2f}x)")
    print(f"  merged shards = one session's outcomes: {same}")


if __name__ == "__main__":
    main()
