"""backends layer: greedy generation over any Backend, with a key/value cache and edits acting on
every step (the same for both adapters)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from torch import Tensor

from ..errors import InterpError
from .base import Backend, Edit, Tokens, check_edits


def _in_chunk(edit: Edit, offset: int, length: int) -> Edit | None:
    """``edit`` (absolute prompt positions) for a chunk of ``length`` positions at ``offset``.

    Edits without positions act on every chunk; others only where their positions fall.
    """
    if edit.positions is None:
        return edit
    inside = [p - offset for p in edit.positions if offset <= p < offset + length]
    if not inside:
        return None
    if len(inside) != len(edit.positions):
        raise InterpError(f"edit positions {edit.positions} straddle a cached prefix")
    return replace(edit, positions=tuple(inside))


def _shared_prefix(tokens: Tokens, edits: Sequence[Edit]) -> int:
    """How many leading positions every row shares and no edit touches (keeping one to run)."""
    limit = tokens.length - 1
    for edit in edits:
        limit = 0 if edit.positions is None else min(limit, *edit.positions)
    shared = 0
    first = tokens.ids[0]
    while shared < limit and all(row[shared] == first[shared] for row in tokens.ids):
        shared += 1
    return shared


def greedy_generate(
    backend: Backend, tokens: Tokens, *, max_new_tokens: int, edits: Sequence[Edit] = (),
    on_step: Callable[[int, Tensor], None] | None = None,
    choose: Callable[[Tensor], Tensor] | None = None,
) -> Tokens:
    """Greedy decoding with a key/value cache, edits acting on every step.

    ``on_step(step, logits)`` sees each step's next-token logits [B, V]; ``choose(logits)``
    picks the next ids [B] instead of the argmax (e.g. seeded sampling).

    Edits with explicit positions act on those prompt positions (negative counts from the
    end of the prompt); edits with ``positions=None`` act on every position, generated ones
    included. The prompt prefix that all rows share and no edit touches runs once, for one
    row. Equal to a full forward pass per step, as causal attention makes it.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
            or max_new_tokens < 0:
        raise InterpError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if max_new_tokens == 0:
        return tokens
    check_edits(backend.info, tokens, edits)
    n = tokens.length
    if n + max_new_tokens > backend.info.n_ctx:
        raise InterpError(
            f"the prompt has {n} tokens and {max_new_tokens} more were asked for, but "
            f"{backend.info.name} takes at most {backend.info.n_ctx}: shorten the prompt or "
            "ask for fewer tokens"
        )
    edits = [e if e.positions is None else replace(e, positions=tuple(p % n for p in e.positions))
             for e in edits]
    shared = _shared_prefix(tokens, edits)
    past = None
    if shared:
        past = backend.run(tokens.row(0).slice(0, shared), keep_past=True, logits_to_keep=1).past
        past.batch_repeat_interleave(tokens.batch)  # type: ignore[attr-defined]
    chunk, offset = tokens.slice(shared), shared
    ids, strs = [list(r) for r in tokens.ids], [list(s) for s in tokens.strs]
    for step in range(max_new_tokens):
        step_edits = [e for e in (_in_chunk(e, offset, chunk.length) for e in edits) if e]
        run = backend.run(chunk, edits=step_edits, past=past, keep_past=True, logits_to_keep=1)
        past, offset = run.past, offset + chunk.length
        logits = run.logits[:, -1]
        if on_step is not None:
            on_step(step, logits)
        nxt = (logits.argmax(-1) if choose is None else choose(logits)).tolist()
        new_strs = [backend.decode([t]) for t in nxt]
        for row_ids, row_strs, t, text in zip(ids, strs, nxt, new_strs, strict=True):
            row_ids.append(t)
            row_strs.append(text)
        chunk = Tokens(tuple((t,) for t in nxt), tuple((text,) for text in new_strs))
    return Tokens(tuple(map(tuple, ids)), tuple(map(tuple, strs)))
