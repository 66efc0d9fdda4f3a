"""results layer: token positions in a prompt's tokens, by int, token string or (string, k)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import checks
from ..errors import SiteError
from ..settings import PLACEHOLDER


def token_position(tokens: Sequence[str], position: int | str, prompt: str) -> int:
    """An int position (negative from the end), or a token string's last occurrence."""
    n = len(tokens)
    if isinstance(position, str):
        if position not in tokens:
            raise SiteError(
                f"token {position!r} is not in the clean prompt {prompt!r} (tokens: "
                f"{list(tokens)}): pass one of them or an int position"
            )
        return n - 1 - list(tokens)[::-1].index(position)
    return checks.position(position, n, or_token=True)

TokenSpec = int | str | tuple[str, int]


def find_token(tokens: Sequence[str], spec: TokenSpec, prompt: str, what: str = "source") -> int:
    """The absolute position of ``spec`` in ``tokens``: an int position (negative from the
    end), a token string that occurs once (matched exactly, else ignoring surrounding spaces),
    or ``(token string, k)`` for its k-th occurrence (negative from the last)."""
    n = len(tokens)
    if isinstance(spec, tuple):
        if len(spec) != 2 or not isinstance(spec[0], str) or isinstance(spec[1], bool) \
                or not isinstance(spec[1], int | np.integer):
            raise SiteError(f"a {what} token must be an int, a string or (string, k), got {spec!r}")
        text, k = spec
    elif isinstance(spec, str):
        text, k = spec, None
    else:
        return checks.position(spec, n, what=f"{what} position", prompt=prompt, or_token=True)
    hits = [i for i, t in enumerate(tokens) if t == text] or \
        [i for i, t in enumerate(tokens) if text.strip() and t.strip() == text.strip()]
    if not hits and what == "target" and text == PLACEHOLDER:
        raise SiteError(
            f"target prompt {prompt!r} has no {PLACEHOLDER!r} placeholder token (tokens: "
            f"{list(tokens)}): put {PLACEHOLDER} where the hidden state goes, or pass "
            "target_token= one of its tokens or an int position"
        )
    if not hits:
        raise SiteError(
            f"{what} token {text!r} is not in {prompt!r} (tokens: {list(tokens)}): pass one of "
            "them or an int position"
        )
    if k is None:
        if len(hits) > 1:
            raise SiteError(
                f"{what} token {text!r} occurs {len(hits)} times in {prompt!r} (positions "
                f"{hits}): pass ({text!r}, k) for the k-th occurrence or an int position"
            )
        return hits[0]
    if not -len(hits) <= k < len(hits):
        raise SiteError(
            f"{what} token {text!r} occurs {len(hits)} times in {prompt!r}, so occurrence {k} "
            f"does not exist: use 0..{len(hits) - 1} or -{len(hits)}..-1"
        )
    return hits[k]

def short_token(token: str, width: int) -> str:
    text = repr(token)[1:-1]
    return text if len(text) <= width else text[: width - 1] + "~"
