"""results layer: metrics over a run's last-position logits: what patching measures and recovers.

A metric maps last-position logits ``[rows, vocab]`` to one number per row ``[rows]``. By
name (``METRICS``), built for an answer (and foil) token:

- ``"logit_diff"``: logit(answer) - logit(foil) (the default; needs a foil);
- ``"logprob"`` / ``"prob"``: log P(answer) / P(answer);
- ``"rank"``: answer's rank (0 = top-1), as a float;
- ``"kl"``: KL(reference || run) in nats, the reference being the clean run's next-token
  distribution (so the clean run scores 0 and recovery reads 1 - KL(patched)/KL(corrupted)).

Or any callable with that signature (batched: rows are patches). No torch at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import InterpError

if TYPE_CHECKING:
    from torch import Tensor

    from .vocab import Vocab

METRICS = ("logit_diff", "logprob", "prob", "rank", "kl")

Metric = str | Callable[["Tensor"], "Tensor"]
MetricFn = Callable[["Tensor"], "Tensor"]


def check(metric: object, foil: object) -> None:
    """Static checks: a known name or a callable; logit_diff needs a foil."""
    if callable(metric):
        return
    if not isinstance(metric, str) or metric not in METRICS:
        raise InterpError(f"metric must be one of {', '.join(METRICS)} or a callable "
                          f"[rows, vocab] -> [rows], got {metric!r}")
    if metric == "logit_diff" and foil is None:
        raise InterpError("metric='logit_diff' needs foil=: pass a foil token, or another "
                          "metric (logprob, prob, rank, kl)")


PATCHING_METHODS = ("exact", "attribution")


def check_method(method: object, verify_top_k: object, metric: object) -> None:
    """Static checks of activation patching's ``method=`` and ``verify_top_k=``."""
    if method not in PATCHING_METHODS:
        raise InterpError(f"method must be one of {', '.join(PATCHING_METHODS)}, got "
                          f"{method!r}")
    if isinstance(verify_top_k, bool) or not isinstance(verify_top_k, int) or verify_top_k < 0:
        raise InterpError(f"verify_top_k must be an int >= 0, got {verify_top_k!r}")
    if verify_top_k and method != "attribution":
        raise InterpError("verify_top_k= checks an attribution estimate against exact "
                          "patching: pass method='attribution' too")
    if method == "attribution" and metric == "rank":
        raise InterpError("metric rank has no gradient: attribution patching needs a "
                          "differentiable metric (logit_diff, logprob, prob, kl)")


MIN_EFFECT = {"logit_diff": 1.0, "logprob": 1.0, "kl": 0.5, "prob": 0.1, "rank": 1.0}
"""The least clean - corrupted (or clean) effect a ratio such as patching recovery or
ablation faithfulness divides by, per metric: below it the ratio is mostly noise (a logit
metric moved by the snapshot tolerance, 0.1, shifts recovery by 0.1 at an effect of 1). A
callable metric's units are its own: it has none unless ``min_effect=`` is given."""


def min_effect(metric: Metric, given: float | None = None) -> float:
    """The effect a ratio over ``metric`` needs: ``given``, else the metric's default."""
    if given is not None:
        return given
    return MIN_EFFECT.get(metric, 0.0) if isinstance(metric, str) else 0.0


def label(metric: Metric) -> str:
    """How results and failures name the metric: its name, or the callable's."""
    if isinstance(metric, str):
        return metric.replace("_", " ")
    return getattr(metric, "__name__", type(metric).__name__)


def describe(label: str, answer: str | None, foil: str | None) -> str:
    """What a metric (by its ``label``) reads, e.g. ``logit diff ' Mary' - ' John'``."""
    if label == "logit diff":
        return f"logit diff {answer!r} - {foil!r}"
    if label in ("logprob", "prob", "rank"):
        return f"{label} of {answer!r}"
    if label == "kl":
        return "KL(clean || run) in nats"
    return f"metric {label}"


def build(metric: Metric, vocab: Vocab, answer: str | None, foil: str | None,
          reference: Tensor | None = None) -> MetricFn:
    """The metric as a function of last-position logits [rows, vocab] -> [rows] (float)."""
    import torch

    check(metric, foil)
    if not isinstance(metric, str):
        user = metric

        def custom(logits: Tensor) -> Tensor:
            out: Any = user(logits.float())
            if not isinstance(out, torch.Tensor) or out.shape != logits.shape[:1]:
                got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise InterpError(f"metric {label(metric)} must return one number per row, a "
                                  f"tensor of shape ({logits.shape[0]},), got {got}")
            return out.float()

        return custom
    if metric == "kl":
        if reference is None:
            raise InterpError("metric='kl' needs the clean run's logits as its reference")
        ref = torch.log_softmax(reference.float(), -1)

        def kl(logits: Tensor) -> Tensor:
            logp = torch.log_softmax(logits.float(), -1)
            return (ref.exp() * (ref - logp)).sum(-1)

        return kl
    if answer is None:
        raise InterpError(f"metric={metric!r} needs answer=")
    a = vocab.id(answer)
    if metric == "logit_diff":
        assert foil is not None
        f = vocab.id(foil)
        return lambda logits: logits[:, a].float() - logits[:, f].float()
    if metric == "logprob":
        return lambda logits: torch.log_softmax(logits.float(), -1)[:, a]
    if metric == "prob":
        return lambda logits: torch.softmax(logits.float(), -1)[:, a]
    return lambda logits: (logits.float() > logits[:, a:a + 1].float()).sum(-1).float()
