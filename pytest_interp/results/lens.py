"""results layer: what the residual stream decodes to after each block (lens results)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from .. import checks
from ..errors import SiteError
from ..record import derived
from ..vocab import Vocab


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


@dataclass(frozen=True, eq=False)
class LensResult:
    """What the residual stream decodes to after each block, at chosen positions.

    ``logits`` is [layers, positions, vocab]: block ``l``'s resid_post through the lens, the
    final norm and the unembedding; ``final_logits`` [positions, vocab] is the model's own
    output there. Layers are block indices (negative counts from the end); positions are the
    prompt's token positions as given to the probe (negative counts from the end).
    """

    model: str
    lens: str  # "logit", or the tuned lens's folder
    prompt: str
    str_tokens: tuple[str, ...]
    positions: tuple[int, ...]  # absolute token positions, in the order of the logits axis
    logits: np.ndarray
    final_logits: np.ndarray
    vocab: Vocab
    target: str | None = None  # set by focus(): snapshots then keep only its trajectory

    @property
    def n_layers(self) -> int:
        return int(self.logits.shape[0])

    def focus(self, target: str) -> LensResult:
        """The same readout narrowed to one target token: snapshots store (and compare) its
        rank and probability per layer and position, nothing else."""
        self.vocab.id(target)
        return derived(replace(self, target=target), self, lambda r: r.focus(target))

    @cached_property
    def log_probs(self) -> np.ndarray:
        """[layers, positions, vocab] log-softmax of ``logits`` (float64)."""
        return _log_softmax(self.logits)

    @cached_property
    def kl_to_final(self) -> np.ndarray:
        """[layers, positions] KL(final || layer) in nats: how far each layer is from the end."""
        final = _log_softmax(self.final_logits)[None]
        return (np.exp(final) * (final - self.log_probs)).sum(-1)

    def layer_index(self, layer: int) -> int:
        """A block index (negative from the end) as 0..n_layers-1."""
        return checks.index(layer, self.n_layers, what="layer", owner=self.model, unit="layers")

    def position_index(self, position: int) -> int:
        absolute = position % len(self.str_tokens) if -len(self.str_tokens) <= position < len(
            self.str_tokens) else None
        if absolute is None or absolute not in self.positions:
            read = ", ".join(str(p) for p in self.positions)
            raise SiteError(
                f"position {position} was not read for this prompt (read: {read}): pass "
                f"positions=[..., {position}] to the lens"
            )
        return self.positions.index(absolute)

    def _at(self, token: str | int, layer: int, position: int) -> tuple[int, int, int]:
        return self.layer_index(layer), self.position_index(position), self.vocab.id(token)

    def rank(self, token: str | int, layer: int, position: int = -1) -> int:
        """0 when ``token`` is the top token at ``layer`` (ties rank above)."""
        li, p, t = self._at(token, layer, position)
        row = self.logits[li, p]
        return int((row > row[t]).sum())

    def ranks(self, token: str | int, position: int = -1) -> list[int]:
        """The rank of ``token`` at every layer."""
        return [self.rank(token, layer, position) for layer in range(self.n_layers)]

    def _log_probs_at(self, li: int, p: int) -> np.ndarray:
        """``log_probs[li, p]``, without computing the other layers' unless they are kept."""
        kept = self.__dict__.get("log_probs")
        return kept[li, p] if kept is not None else _log_softmax(self.logits[li, p])

    def prob(self, token: str | int, layer: int, position: int = -1) -> float:
        li, p, t = self._at(token, layer, position)
        return float(np.exp(self._log_probs_at(li, p)[t]))

    def logit(self, token: str | int, layer: int, position: int = -1) -> float:
        li, p, t = self._at(token, layer, position)
        return float(self.logits[li, p, t])

    def top(self, layer: int, k: int = 5, position: int = -1) -> list[tuple[str, float]]:
        """The ``k`` most likely tokens at ``layer`` with their probabilities."""
        li, p = self.layer_index(layer), self.position_index(position)
        row = self._log_probs_at(li, p)
        ids = np.argsort(-row, kind="stable")[:k]
        return [(self.vocab.decode_one(int(i)), float(np.exp(row[i]))) for i in ids]

    def emergence_layer(self, token: str | int, top_k: int = 1, position: int = -1) -> int | None:
        """First layer from which ``token`` stays within the top ``top_k`` to the last layer."""
        ranks = self.ranks(token, position)
        first = None
        for layer in range(self.n_layers - 1, -1, -1):
            if ranks[layer] >= top_k:
                break
            first = layer
        return first

    def table(
        self, target: str | int | None = None, position: int = -1, mark: int | None = None,
        k: int = 3,
    ) -> str:
        """Layer-by-layer text table: top-k with probs, and the target's rank and prob."""
        p = self.position_index(position)
        token = self.str_tokens[self.positions[p]]
        lines = [f"{self.lens} lens on {self.prompt!r} at position {position} ({token!r})"
                 + (f", target {target!r}" if target is not None else "")]
        header = f"  {'layer':>5}  {'top-' + str(k):<44}"
        if target is not None:
            header += f"{'rank':>7}  {'prob':>7}"
        lines.append(header)
        marked = None if mark is None else self.layer_index(mark)
        for layer in range(self.n_layers):
            tops = "  ".join(f"{s!r} {pr:.2f}" for s, pr in self.top(layer, k, position))
            row = f"{'>' if layer == marked else ' '} {layer:>5}  {tops:<44}"
            if target is not None:
                row += f"{self.rank(target, layer, position):>7}  " \
                       f"{self.prob(target, layer, position):>7.4f}"
            lines.append(row.rstrip())
        return "\n".join(lines)
