"""``python -m pytest_interp COMMAND``: ``bisect`` or ``init`` (see their modules)."""

from __future__ import annotations

import sys


def main() -> int:
    commands = {"bisect": "pytest_interp.bisect", "init": "pytest_interp.init"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(f"usage: python -m pytest_interp {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    from importlib import import_module

    return int(import_module(commands[sys.argv[1]]).main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
