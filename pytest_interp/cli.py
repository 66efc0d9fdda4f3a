"""top layer: the ``pytest-interp`` command (also ``python -m pytest_interp``), one argparse parser
with a subcommand per job: ``init`` (write a suite for a model), ``bisect`` (find the first failing
checkpoint), ``lens train`` (a tuned lens), ``merge`` (one report from several sessions'
results). Each subcommand's module gives ``HELP``, ``add_arguments(parser)`` and ``run(args,
parser) -> exit status``; a new one is one line of ``COMMANDS``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

COMMANDS = {"init": "pytest_interp.init", "bisect": "pytest_interp.bisect",
            "lens": "pytest_interp.lens", "merge": "pytest_interp.merge"}


def parser(prog: str = "python -m pytest_interp") -> argparse.ArgumentParser:
    """The command's parser, a subparser per command (``--help`` on each)."""
    top = argparse.ArgumentParser(
        prog=prog, description="pytest-interp: regression tests of what language models do "
                               "inside. Tests run under pytest; these commands help write "
                               "and bisect them.")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, path in COMMANDS.items():
        module = import_module(path)
        command = sub.add_parser(name, help=module.HELP, description=module.HELP[0].upper()
                                 + module.HELP[1:] + ".")
        module.add_arguments(command)
        command.set_defaults(run=module.run, parser=command)
    return top


def main(argv: Sequence[str] | None = None, prog: str = "python -m pytest_interp") -> int:
    """Run a command; its exit status. ``bisect``'s pytest arguments follow ``--``."""
    args = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in args:
        args, rest = args[:args.index("--")], args[args.index("--") + 1:]
    options = parser(prog).parse_args(args)
    options.pytest_args = rest
    return int(options.run(options, options.parser))


def console() -> int:
    """The ``pytest-interp`` console script."""
    return main(prog="pytest-interp")
