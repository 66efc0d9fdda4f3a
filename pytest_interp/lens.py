"""top layer: the ``lens`` command: ``pytest-interp lens train ...`` (also ``python -m
pytest_interp.lens train ...``).

Trains a tuned lens for a checkpoint offline and saves it in tuned-lens's layout, so a
``lens=DIR`` marker or ``interp_model.tuned_lens(prompt, lens=DIR)`` can use it. Resumable:
rerunning the same command continues from ``DIR/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import InterpError


def _layers(text: str) -> tuple[int, ...]:
    """Parse ``3,5,7`` or ``10-20`` (inclusive) into translator indices."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part.strip()[1:]:
            lo, hi = part.split("-", 1)
            out.extend(range(int(lo), int(hi) + 1))
        elif part.strip():
            out.append(int(part))
    return tuple(out)


HELP = "train a tuned lens for a checkpoint (offline), in tuned-lens's layout"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``lens``'s subcommand ``train`` and its options."""
    sub = parser.add_subparsers(dest="lens_command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="train a tuned lens on a text file (offline)")
    train.add_argument("--model", required=True, help="model spec (alias, HF dir or .gguf)")
    train.add_argument("--text", required=True, type=Path,
                       help="UTF-8 text file; paragraphs separated by blank lines")
    train.add_argument("--out", required=True, type=Path, help="folder to write the lens to")
    train.add_argument("--backend", default="transformer_lens",
                       choices=["transformer_lens", "nnsight"])
    train.add_argument("--steps", type=int, default=250)
    train.add_argument("--lr", type=float, default=1.0)
    train.add_argument("--batch", type=int, default=4)
    train.add_argument("--seq-len", type=int, default=64)
    train.add_argument("--layers", type=_layers, default=None,
                       help="translators to train, e.g. 10-20 or 5,10 (default: all)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--no-resume", action="store_true",
                       help="start over even if DIR/checkpoint.pt exists")
    train.add_argument("--quiet", action="store_true", help="no progress bar")


def main(argv: list[str] | None = None) -> int:
    """``python -m pytest_interp.lens train ARGS`` (the old spelling)."""
    from .cli import main as cli

    return cli(["lens", *(sys.argv[1:] if argv is None else argv)])


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train the lens; 0 when written, 2 on bad input, 130 when interrupted (resumable)."""
    from .backends.load import load_backend
    from .model import InterpModel
    from .probes.lens import TrainConfig, train_tuned_lens
    from .settings import ModelRequest

    try:
        if not args.text.is_file():
            raise InterpError(f"--text {str(args.text)!r}: no such file: pass a UTF-8 text file")
        texts = [p for p in args.text.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        model = InterpModel(load_backend(ModelRequest(args.model, args.backend)))
        config = TrainConfig(steps=args.steps, lr=args.lr, batch=args.batch,
                             seq_len=args.seq_len, layers=args.layers, seed=args.seed)
        train_tuned_lens(model, texts, args.out, config, resume=not args.no_resume,
                         progress=not args.quiet)
    except InterpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: progress saved in {args.out / 'checkpoint.pt'}; rerun to resume",
              file=sys.stderr)
        return 130
    print(f"tuned lens written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
