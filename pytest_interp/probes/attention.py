"""probes layer: attention-head summaries, written once against the Runner interface.

Per head, from its softmaxed pattern on a prompt (query positions >= 1, since position 0 can
only attend to itself): mean entropy (nats), mass on the first token, previous-token score
(attention to q-1), self score (attention to q). The induction score is read on a seeded
sequence of random tokens repeated twice: the mean attention, over the second copy, from each
token to the token after its earlier occurrence (q - n + 1), as TransformerLens's and
pattern-lens's induction detectors do.
"""

from __future__ import annotations

import torch

from ..backends.base import Tokens
from ..errors import InterpError
from ..results import AttentionResult, attention_labels
from ..sites import all_sites
from .runner import Runner


def repeated_random_tokens(model: Runner, n: int, seed: int) -> Tokens:
    """``n`` seeded random token ids (no special tokens), then the same ``n`` again."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise InterpError(f"the repeated sequence needs n >= 2 random tokens, got {n!r}")
    if 2 * n > model.info.n_ctx:
        raise InterpError(f"2 x {n} tokens exceed the model's context of {model.info.n_ctx}")
    generator = torch.Generator().manual_seed(seed)
    special = model.vocab.special
    pool = torch.tensor([i for i in range(min(model.info.d_vocab, 20000)) if i not in special])
    ids = pool[torch.randperm(len(pool), generator=generator)[:n]].tolist() * 2
    return Tokens((tuple(ids),), (tuple(model.vocab.decode_one(i) for i in ids),))


def _scores(pattern: torch.Tensor) -> dict[str, torch.Tensor]:
    """pattern [L, H, Q, K] -> entropy, first_token, previous_token, self, each [L, H]."""
    q = torch.arange(1, pattern.shape[-2])
    rows = pattern[:, :, 1:]  # queries >= 1
    entropy = -(rows * torch.log(rows.clamp_min(1e-30))).sum(-1).mean(-1)
    return {
        "entropy": entropy,
        "first_token": rows[..., 0].mean(-1),
        "previous_token": pattern[:, :, q, q - 1].mean(-1),
        "self": pattern[:, :, q, q].mean(-1),
    }


def _patterns(model: Runner, tokens: Tokens) -> torch.Tensor:
    sites = all_sites(model.info.n_layers, ("attn_pattern",))
    run = model.run(tokens, read=sites)
    return torch.stack([run.acts[s][0] for s in sites]).float()  # [L, H, Q, K]


@torch.inference_mode()
def attention(
    model: Runner, prompt: str | None = None, *, n: int = 20, seed: int = 0,
    thresholds: dict[str, float] | None = None,
) -> AttentionResult:
    """Scores and labels of every head; ``prompt`` None = the repeated random sequence."""
    repeated = repeated_random_tokens(model, n, seed)
    rep_pattern = _patterns(model, repeated)
    q = torch.arange(n, 2 * n)
    induction = rep_pattern[:, :, q, q - n + 1].mean(-1)
    if prompt is None:
        tokens, pattern = repeated, rep_pattern
    else:
        tokens = model.tokens(prompt)
        if tokens.batch != 1:
            raise InterpError("attention reads one prompt at a time; call it once per prompt")
        if tokens.length < 2:
            raise InterpError(f"the prompt {prompt!r} has one token: attention scores need two "
                              "or more")
        pattern = _patterns(model, tokens)
    scores = {k: v.cpu().numpy().astype("float64") for k, v in _scores(pattern).items()}
    scores["induction"] = induction.cpu().numpy().astype("float64")
    return AttentionResult(
        model=model.info.name, prompt=prompt, str_tokens=tokens.strs[0],
        scores=scores, labels=attention_labels(scores, thresholds),
        patterns=pattern.cpu().numpy().astype("float32"), seed=seed, n=n,
    )

