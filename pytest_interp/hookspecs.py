"""Hooks pytest-interp offers to conftest files and plugins."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .registry import KindRegistry


@pytest.hookspec(historic=True)
def pytest_interp_register_kinds(registry: KindRegistry) -> None:
    """Add expectation kinds: call ``registry.register(kind)`` for each ``ExpectationKind``.

    Called once per session for every plugin and conftest, including those loaded later;
    the kinds' markers are registered with pytest and removed when the session ends.
    """
