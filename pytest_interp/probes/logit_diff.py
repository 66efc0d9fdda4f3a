"""probes layer: the logit difference answer - foil at a prompt's last position, one prompt or many
rows batched."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InterpError
from ..results import LogitDiffResult
from .batching import last_logits
from .runner import Runner


def logit_diff(model: Runner, prompt: str, answer: str, foil: str) -> LogitDiffResult:
    """logit(answer) - logit(foil) at the last position of ``prompt``, with the top-5 there."""
    tokens = model.tokens(prompt)
    if tokens.batch != 1:
        raise InterpError("logit_diff reads one prompt at a time; call it once per prompt")
    return _logit_diff(model, prompt, answer, foil, model.run(tokens).logits[0, -1].float())


def _logit_diff(model: Runner, prompt: str, answer: str, foil: str,
                logits: torch.Tensor) -> LogitDiffResult:
    a, f = model.vocab.id(answer), model.vocab.id(foil)
    top = torch.softmax(logits, -1).topk(5)
    return LogitDiffResult(
        model=model.info.name, prompt=prompt, answer=answer, foil=foil,
        value=float(logits[a] - logits[f]),
        top=tuple((model.vocab.decode_one(int(i)), float(p))
                  for p, i in zip(top.values, top.indices, strict=True)),
    )


def logit_diffs(model: Runner, rows: Sequence[tuple[str, str, str]]) -> list[LogitDiffResult]:
    """``logit_diff`` of many (prompt, answer, foil) rows, batched (see ``last_logits``)."""
    logits = last_logits(model, [prompt for prompt, _, _ in rows])
    return [_logit_diff(model, prompt, answer, foil, row)
            for (prompt, answer, foil), row in zip(rows, logits, strict=True)]
