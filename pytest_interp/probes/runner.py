"""probes layer: the narrow interface probes use: what they may ask of a loaded model, and nothing
more.

``InterpModel`` implements it; probes never import ``pytest_interp.model``. Runs through
``run`` are memoised (the same forward pass is never done twice); ``forward`` is for rows
that are used once (a sweep's patched rows) and is never memoised.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from torch import Tensor

    from ..backends.base import Edit, ModelInfo, Run, Start, Tokens
    from ..backends.splice import Splice
    from ..sites import Site
    from ..vocab import Vocab


class Runner(Protocol):
    """A loaded model as probes see it."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def vocab(self) -> Vocab: ...

    def tokens(self, prompts: str | Sequence[str] | Tokens) -> Tokens:
        """Tokenize one prompt or a batch of prompts of equal token length."""
        ...

    def run(
        self, prompts: str | Sequence[str] | Tokens, *, read: Collection[Site] = (),
        edits: Sequence[Edit] = (), logits_to_keep: int = 0,
    ) -> Run:
        """One batched forward pass, memoised per (tokens, edits, logits_to_keep)."""
        ...

    def forward(
        self, tokens: Tokens, *, read: Collection[Site] = (), edits: Sequence[Edit | Splice] = (),
        start: Start | None = None, logits_to_keep: int = 0, past: object = None,
        keep_past: bool = False, grad: bool = False,
    ) -> Run:
        """One batched forward pass, not memoised (``Backend.run``'s arguments)."""
        ...

    def rows_per_pass(self, positions: int, wanted: int, cap: int, *, logits: int = 1) -> int:
        """How many rows of ``positions`` tokens, keeping the logits of ``logits`` positions, one
        forward pass may hold within the memory budget (``--interp-memory``), at most ``cap``;
        a batch of ``wanted`` rows split for memory is counted in the summary and the report."""
        ...

    def unembed(self, hidden: Tensor) -> Tensor:
        """Final norm + unembedding of residual-stream vectors [..., D] -> [..., V]."""
        ...

    def generate_tokens(
        self, prompts: str | Sequence[str] | Tokens, *, max_new_tokens: int = 20,
        edits: Sequence[Edit] = (), on_step: Callable[[int, Tensor], None] | None = None,
        choose: Callable[[Tensor], Tensor] | None = None,
    ) -> Tokens:
        """Greedy continuation of each row (prompt included); ``on_step(step, logits [B, V])``
        sees each step, ``choose(logits) -> ids [B]`` replaces the argmax."""
        ...
