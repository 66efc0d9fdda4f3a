"""base layer: one error type for everything a user can get wrong (the einops way)."""

from __future__ import annotations


class InterpError(Exception):
    """A user-facing error: one line that says what is wrong and names the fix."""


class ModelSpecError(InterpError):
    """A model spec that cannot be resolved or loaded."""


class SiteError(InterpError):
    """A site, layer, head or position that the model does not have."""
