"""probes layer: greedy generation with its margins, written once against the Runner interface.

A greedy step's margin is the top-1 minus the top-2 logit when the token was chosen: how
near a tie it was. Snapshots compare greedy texts exactly except where they part at a step
whose margin is below the logit tolerance (a near-tie; the rest is then not compared).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..backends.base import Tokens
from ..errors import InterpError
from ..results import GenerationResult
from .runner import Runner


class Margins:
    """An ``on_step`` callback recording each row's margin at every step (and calling
    ``then``, if given)."""

    def __init__(self, then: Callable[[int, Tensor], None] | None = None) -> None:
        self.by_step: list[list[float]] = []
        self._then = then

    def __call__(self, step: int, logits: Tensor) -> None:
        top = logits.float().topk(2, dim=-1).values
        self.by_step.append((top[:, 0] - top[:, 1]).tolist())
        if self._then is not None:
            self._then(step, logits)

    def rows(self) -> tuple[tuple[float, ...], ...]:
        """[rows][steps]"""
        return tuple(zip(*self.by_step, strict=True)) if self.by_step else ()


@torch.inference_mode()
def generation(model: Runner, prompt: str, *, max_new_tokens: int = 20) -> GenerationResult:
    """The greedy continuation of one prompt, token by token, with each step's margin."""
    tokens = model.tokens(prompt)
    if tokens.batch != 1:
        raise InterpError("generation reads one prompt at a time; call it once per prompt")
    return generations(model, [prompt], max_new_tokens=max_new_tokens)[0]


@torch.inference_mode()
def generations(model: Runner, prompts: Sequence[str], *, max_new_tokens: int = 20,
                batch_size: int = 32) -> list[GenerationResult]:
    """``generation`` of many prompts: one batched greedy decode per token length."""
    from .batching import by_length

    tokens = [model.tokens(p) for p in prompts]
    out: list[GenerationResult | None] = [None] * len(prompts)
    for group in by_length(tokens):
        for lo in range(0, len(group), batch_size):
            chunk = group[lo:lo + batch_size]
            margins = Margins()
            batch = Tokens.stack([tokens[i] for i in chunk])
            done = model.generate_tokens(batch, max_new_tokens=max_new_tokens, on_step=margins)
            rows = margins.rows()
            for row, i in enumerate(chunk):
                ids = done.ids[row][batch.length:]
                out[i] = GenerationResult(
                    model=model.info.name, prompt=prompts[i], text=model.vocab.decode(ids),
                    tokens=tuple(model.vocab.decode_one(t) for t in ids),
                    margins=tuple(rows[row]) if ids else ())
    return [r for r in out if r is not None]
