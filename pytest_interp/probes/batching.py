"""probes layer: batching helpers every probe shares: rows grouped by token length (one unpadded
batch each), a clean/corrupted pair of equal length, last-position logits."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..backends.base import Tokens
from ..errors import InterpError
from .runner import Runner


@torch.inference_mode()
def last_logits(model: Runner, prompts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """Each prompt's last-position logits [V]: one unpadded forward per token length."""
    tokens = [model.tokens(prompt) for prompt in prompts]
    last: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    for group in by_length(tokens):
        rows = model.rows_per_pass(tokens[group[0]].length, len(group), batch_size)
        for lo in range(0, len(group), rows):
            chunk = group[lo:lo + rows]
            run = model.forward(Tokens.stack([tokens[i] for i in chunk]), logits_to_keep=1)
            for i, logits in zip(chunk, run.logits[:, -1].float(), strict=True):
                last[i] = logits
    return last


def by_length(tokens: Sequence[Tokens]) -> list[list[int]]:
    """Indices of ``tokens`` grouped by token length (each group is one unpadded batch)."""
    groups: dict[int, list[int]] = {}
    for i, t in enumerate(tokens):
        groups.setdefault(t.length, []).append(i)
    return list(groups.values())


def paired_tokens(model: Runner, clean: str, corrupted: str) -> tuple[Tokens, Tokens]:
    """Tokenize a clean/corrupted pair, which must have the same number of tokens."""
    a, b = model.tokens(clean), model.tokens(corrupted)
    if a.length != b.length:
        width = max(a.length, b.length)
        rows = [f"  {i:>3}  {_cell(a.strs[0], i):<16} {_cell(b.strs[0], i)}" for i in range(width)]
        raise InterpError(
            f"clean and corrupted prompts must tokenize to the same length, got {a.length} and "
            f"{b.length}: reword one so positions line up\n  pos  {'clean':<16} corrupted\n"
            + "\n".join(rows)
        )
    return a, b


def _cell(tokens: tuple[str, ...], i: int) -> str:
    return repr(tokens[i]) if i < len(tokens) else "-"
