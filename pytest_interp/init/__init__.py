"""top layer: the ``init`` command: write a regression suite for a model.

    python -m pytest_interp init --model smollm2-135m --out tests/interp

Explores the model (facts it recalls and where they emerge in the logit lens, IOI and the
layers patching moves the answer through, induction and previous-token heads, a steering
direction), writes a readable pytest suite whose bounds come from what it measured, writes
its snapshots with calibrated noise floors, and runs the suite once to show it passes.

Bounds keep a documented safety margin (``MARGINS``) beyond the measured 95% interval's far
end, so the suite passes on the model it was made from and on benign variants (a re-save,
bfloat16 rounding) and fails on real damage; every generated test says what was measured.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ..errors import InterpError
from .bounds import fraction_bound, lower_bound, upper_bound
from .explore import (
    CONTRAST,
    PARTS,
    Budget,
    Findings,
    duration,
    explore,
    say,
    user_facts,
)
from .write import render

__all__ = ["CONTRAST", "PARTS", "Findings", "add_arguments", "fraction_bound", "lower_bound",
           "main", "render", "run", "upper_bound"]


def pytest_session(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``pytest`` on the written suite, in a new process, from its folder."""
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=out, capture_output=True, text=True, check=False)


HELP = "explore a model and write a regression suite for it, with snapshots"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``init``'s options."""
    parser.add_argument("--model", required=True,
                        help="the model spec, as --interp-model takes it")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--facts", type=Path, default=None,
                        help="a .jsonl of {prompt, target} facts, tried with the capitals")
    parser.add_argument("--ioi-prompts", type=int, default=64, help="IOI dataset size")
    parser.add_argument("--sae", default=None,
                        help="a sparse dictionary (SAELens, Gemma Scope or sparsify folder, or "
                             "hub path): adds a test of its latent most selective for the "
                             "recalled facts' answers")
    parser.add_argument("--budget-seconds", type=float, default=None,
                        help="stop exploring after this many seconds (parts not started are "
                             "left out, a sweep stops where it is)")
    parser.add_argument("--backend", default="transformer_lens",
                        choices=("transformer_lens", "nnsight"))
    parser.add_argument("--no-snapshots", action="store_true",
                        help="write no snapshot test (and no noise floors)")
    parser.add_argument("--no-verify", action="store_true",
                        help="do not run the written suite at the end")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder")


def main(argv: Sequence[str]) -> int:
    """``python -m pytest_interp init ARGS`` (the old spelling)."""
    from ..cli import main as cli

    return cli(["init", *argv])


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Explore, write the suite and its snapshots, run it; 0 when it passes."""
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        parser.error(f"--parts takes some of {', '.join(PARTS)}, got {args.parts!r}")
    out: Path = args.out.resolve()
    if out.exists() and any(out.iterdir()) and not args.force:
        parser.error(f"{args.out} is not empty: choose another --out or pass --force")
    try:
        facts = user_facts(args.facts) if args.facts else []
        from ..backends.load import load_backend
        from ..model import InterpModel
        from ..settings import ModelRequest

        start = time.monotonic()
        request = ModelRequest(args.model, backend=args.backend)
        say(f"loading {args.model} ...")
        model = InterpModel(load_backend(request), request=request)
        sae = None
        if args.sae:  # the written suite names a local dictionary from its own folder
            local = Path(args.sae).expanduser()
            sae = (args.sae, os.path.relpath(local.resolve(), out) if local.exists()
                   else args.sae)
            parts.append("features")
        found = explore(model, args.model, parts, ioi_n=args.ioi_prompts, facts=facts,
                        budget=Budget(args.budget_seconds, start), sae=sae)
    except InterpError as exc:
        print(f"init: {exc}", file=sys.stderr)
        return 2
    if args.no_snapshots:
        found.left_out["snapshots"] = "--no-snapshots"
    for part, why in found.left_out.items():
        say(f"left out {part}: {why}")
    files = render(found)
    if args.no_snapshots:
        del files["test_snapshots.py"]
        if not found.parts:
            say(f"found nothing to claim on {args.model} (every part was left out) and "
                "--no-snapshots: no suite written; drop --no-snapshots to snapshot it")
            return 1
    out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (out / name).write_text(text)
    say(f"wrote {', '.join(sorted(files))} to {args.out} "
        f"({duration(time.monotonic() - start)})")
    if not args.no_snapshots:
        say("writing snapshots with calibrated noise floors ...")
        done = pytest_session(out, "test_snapshots.py", "--snapshot-update", "-q")
        if done.returncode != 0:
            print(done.stdout[-3000:], file=sys.stderr)
            say("writing the snapshots failed (above)")
            return 1
    if not args.no_verify:
        say("running the suite on the model it was made from ...")
        done = pytest_session(out, "-q")
        last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        if done.returncode != 0:
            print(done.stdout[-5000:], file=sys.stderr)
            say(f"the written suite does not pass on {args.model}: {last}")
            return 1
        say(f"the suite passes on {args.model}: {last.strip('= ')}")
    say(f"done in {duration(time.monotonic() - start)}; run it with: python -m pytest {args.out}")
    return 0
