"""results layer: a model's vocabulary as results need it (id <-> string), without torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InterpError


@dataclass(frozen=True)
class Vocab:
    """A model's tokens as results need them: id <-> string, and a single token's id.

    ``decode_one(id)`` is one token's text, ``decode(ids)`` a sequence's (as the tokenizer
    joins them), ``encode(text)`` the ids of a text without special tokens; ``special`` holds
    the tokenizer's special token ids.
    """

    size: int
    decode_one: Callable[[int], str]
    encode: Callable[[str], list[int]]
    decode: Callable[[Sequence[int]], str] = lambda ids: ""
    special: frozenset[int] = frozenset()

    @staticmethod
    def from_strings(strings: Sequence[str]) -> Vocab:
        """A vocabulary of whole-token strings (for hand-built results in tests)."""
        index = {s: i for i, s in enumerate(strings)}

        def encode(text: str) -> list[int]:
            if text in index:
                return [index[text]]
            return [index.get(ch, 0) for ch in text]

        return Vocab(len(strings), lambda i: strings[i], encode,
                     lambda ids: "".join(strings[i] for i in ids))

    def id(self, token: str | int) -> int:
        """The id of a single-token string (or an id, checked), else one clear error."""
        if isinstance(token, bool) or not isinstance(token, int | str | np.integer):
            raise InterpError(f"a target token must be a string or an id, got {token!r}")
        if not isinstance(token, str):
            if not 0 <= int(token) < self.size:
                raise InterpError(
                    f"token id {token} is outside the vocabulary (0..{self.size - 1})"
                )
            return int(token)
        ids = self.encode(token)
        if len(ids) != 1:
            pieces = [self.decode_one(i) for i in ids]
            raise InterpError(
                f"target {token!r} is not a single token: it tokenizes to {pieces}; "
                "use a single-token target (mind the leading space, e.g. ' Paris')"
            )
        return ids[0]
