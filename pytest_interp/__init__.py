"""pytest-interp: regression tests of what language models do inside.

What a conftest or package needs to add its own expectation kinds (see the README's
"Your own expectation kinds"): ``Expectation``, ``ExpectationKind``, ``SnapshotCodec``,
``Change`` and ``InterpError``.
"""

from .codec import Change, SnapshotCodec, Tolerances
from .errors import InterpError
from .expectation import Expectation, ExpectationKind

__all__ = ["Change", "Expectation", "ExpectationKind", "InterpError", "SnapshotCodec",
           "Tolerances"]
