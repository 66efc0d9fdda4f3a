"""top layer: ``python -m pytest_interp COMMAND`` (see ``pytest_interp.cli``)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
