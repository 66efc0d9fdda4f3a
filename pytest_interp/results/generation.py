"""results layer: greedy continuations with each step's margin."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationResult:
    """A greedy continuation: its text, its tokens, and each step's margin (top-1 minus
    top-2 logit when the token was chosen)."""

    model: str
    prompt: str
    text: str
    tokens: tuple[str, ...]
    margins: tuple[float, ...]
