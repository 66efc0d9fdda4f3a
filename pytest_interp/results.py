"""Frozen result dataclasses: tokens, numbers and small numpy arrays, never tensors.

Expectations and snapshots read these, so they can be unit-tested with hand-built results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np

from . import checks, metrics
from .errors import InterpError, SiteError
from .record import derived
from .settings import PLACEHOLDER


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

    def prob(self, token: str | int, layer: int, position: int = -1) -> float:
        li, p, t = self._at(token, layer, position)
        return float(np.exp(self.log_probs[li, p, t]))

    def logit(self, token: str | int, layer: int, position: int = -1) -> float:
        li, p, t = self._at(token, layer, position)
        return float(self.logits[li, p, t])

    def top(self, layer: int, k: int = 5, position: int = -1) -> list[tuple[str, float]]:
        """The ``k`` most likely tokens at ``layer`` with their probabilities."""
        li, p = self.layer_index(layer), self.position_index(position)
        row = self.log_probs[li, p]
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


@dataclass(frozen=True)
class GenerationResult:
    """A greedy continuation: its text, its tokens, and each step's margin (top-1 minus
    top-2 logit when the token was chosen)."""

    model: str
    prompt: str
    text: str
    tokens: tuple[str, ...]
    margins: tuple[float, ...]


@dataclass(frozen=True)
class LogitDiffResult:
    """logit(answer) - logit(foil) at the last position of a prompt, with the model's own
    next-token top-5 there (token, probability)."""

    model: str
    prompt: str
    answer: str
    foil: str
    value: float
    top: tuple[tuple[str, float], ...]


def _short(token: str, width: int) -> str:
    text = repr(token)[1:-1]
    return text if len(text) <= width else text[: width - 1] + "~"


@dataclass(frozen=True, eq=False)
class PatchingResult:
    """Activation patching: the metric when one clean activation is written into the corrupted run.

    ``patched`` holds the metric (``metric``: by default the logit diff answer - foil at the
    last position) per patch: [layers, positions] for residual/attn_out/mlp_out sites,
    [layers, heads] for head_out patched at every position, [layers, heads, positions] for
    head_out patched position by position. ``clean_logit_diff``/``corrupted_logit_diff`` hold
    the metric of the clean and corrupted runs (named for the default).
    """

    model: str
    site: str
    clean: str
    corrupted: str
    answer: str | None
    foil: str | None
    clean_tokens: tuple[str, ...]
    corrupted_tokens: tuple[str, ...]
    clean_logit_diff: float
    corrupted_logit_diff: float
    patched: np.ndarray
    heads: bool = False  # True for head_out sweeps (a heads axis after layers)
    per_position: bool = True  # False for head_out patched at every position at once
    metric: str = "logit diff"  # what patched, clean_logit_diff... measure (metrics.label)
    method: str = "exact"  # or "attribution": ``patched`` is a first-order estimate
    exact: np.ndarray | None = None  # attribution: exact patched metric of verified cells

    @property
    def n_layers(self) -> int:
        return int(self.patched.shape[0])

    @property
    def estimate(self) -> bool:
        """Whether ``patched`` is estimated (attribution patching) rather than measured."""
        return self.method != "exact"

    @property
    def estimate_errors(self) -> np.ndarray:
        """Estimated minus exact recovery at each verified cell (``verify_top_k``)."""
        if self.exact is None:
            return np.zeros(0)
        done = ~np.isnan(self.exact)
        exact = (self.exact - self.corrupted_logit_diff) / (
            self.clean_logit_diff - self.corrupted_logit_diff)
        return (self.recovery - exact)[done]

    @property
    def how(self) -> str:
        """How ``patched`` was found, as shown in titles: "" or "attribution estimate, ..."."""
        if not self.estimate:
            return ""
        errors = self.estimate_errors
        if not errors.size:
            return f"{self.method} estimate, not verified"
        return (f"{self.method} estimate; its {errors.size} largest cells patched exactly: "
                f"max |error| {np.abs(errors).max():.2f} recovery")

    @property
    def effect(self) -> float:
        """clean - corrupted: what recovery divides by (the behaviour the pair shows)."""
        return float(self.clean_logit_diff - self.corrupted_logit_diff)

    @property
    def recovery(self) -> np.ndarray:
        """(patched - corrupted) / (clean - corrupted): 1 = fully restores clean, 0 = no effect."""
        gap = self.clean_logit_diff - self.corrupted_logit_diff
        if gap == 0:
            raise InterpError(
                f"clean and corrupted {self.metric}s are equal ({self.clean_logit_diff:.4f}): "
                "recovery is undefined; pick prompts on which the model behaves differently"
            )
        return (self.patched - self.corrupted_logit_diff) / gap

    @property
    def measured(self) -> str:
        """What the metric reads, e.g. ``logit diff ' Mary' - ' John'``."""
        return metrics.describe(self.metric, self.answer, self.foil)

    def position_index(self, position: int | str) -> int:
        """An int position, or a token string's last occurrence in the clean prompt."""
        return token_position(self.clean_tokens, position, self.clean)

    def layer_index(self, layer: int) -> int:
        """A block index (negative from the end) as 0..n_layers-1."""
        return checks.index(layer, self.n_layers, what="layer", owner=self.model, unit="layers")

    def grid_2d(self, head: int | None = None) -> tuple[np.ndarray, list[str], str]:
        """The 2-D recovery grid shown in failures: values, column labels, column axis name."""
        rec = self.recovery
        if not self.heads:
            return rec, [_short(t, 6) for t in self.clean_tokens], "position"
        if not self.per_position:
            return rec, [f"H{h}" for h in range(rec.shape[1])], "head"
        if head is None:
            return rec.max(axis=1), [_short(t, 6) for t in self.clean_tokens], "position (max head)"
        return rec[:, head], [_short(t, 6) for t in self.clean_tokens], f"position (head {head})"

    def grid(self, mark: tuple[int, int] | None = None, head: int | None = None) -> str:
        """Recovery as a text heatmap, layers down, columns across; ``mark`` = (layer, column)."""
        values, labels, axis = self.grid_2d(head)
        how = f" [{self.how}]" if self.how else ""
        lines = [
            f"{self.site} patching recovery{how} (clean {self.clean_logit_diff:+.3f}, corrupted "
            f"{self.corrupted_logit_diff:+.3f}: {self.measured} at the last position); rows "
            f"layer, columns {axis}",
            "        " + "".join(f"{label:>7}" for label in labels),
        ]
        for layer in range(values.shape[0]):
            cells = []
            for col in range(values.shape[1]):
                value = values[layer, col]
                text = "·" if np.isnan(value) else f"{value:.2f}"
                if mark == (layer, col):
                    text = f"[{text}]"
                cells.append(f"{text:>7}")
            flag = ">" if mark and mark[0] == layer else " "
            lines.append(f"{flag} {layer:>5} " + "".join(cells))
        return "\n".join(lines)


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


@dataclass(frozen=True, eq=False)
class PatchscopeResult:
    """Patchscope readouts: the source prompt's hidden state at (source layer, position)
    patched into the target prompt at (target layer, position), decoded greedily.

    One row per (source layer, target layer) pair; layers are non-negative block indices
    whose output (resid_post) is read and overwritten.
    """

    model: str
    source: str
    source_tokens: tuple[str, ...]
    source_position: int
    target: str
    target_tokens: tuple[str, ...]
    target_position: int
    pairs: tuple[tuple[int, int], ...]  # (source layer, target layer) per row
    continuations: tuple[str, ...]  # decoded generated text per row
    token_ids: tuple[tuple[int, ...], ...]  # generated ids per row
    expected: str | None = None  # the token whose first-step probability is kept
    expected_prob: tuple[float, ...] | None = None  # per row
    margins: tuple[tuple[float, ...], ...] | None = None  # per row, per generated step
    tokens: tuple[tuple[str, ...], ...] | None = None  # per row: each generated token

    def row(self, layer: int, target_layer: int | None = None) -> int:
        """The row of (source ``layer``, ``target_layer``); target defaults to the same layer,
        else to the only target layer swept for that source layer."""
        rows = [i for i, (s, _) in enumerate(self.pairs) if s == layer]
        if target_layer is not None:
            rows = [i for i in rows if self.pairs[i][1] == target_layer]
        elif len(rows) > 1:
            rows = [i for i in rows if self.pairs[i][1] == layer] or rows
        if len(rows) != 1:
            swept = ", ".join(f"{s}->{t}" for s, t in self.pairs)
            want = f"{layer}->{'?' if target_layer is None else target_layer}"
            raise SiteError(
                f"no single patchscope row for layers {want} (swept: {swept}): pass a swept "
                "source layer and its target_layer"
            )
        return rows[0]

    def text(self, layer: int, target_layer: int | None = None) -> str:
        """The decoded continuation for (source ``layer``, ``target_layer``)."""
        return self.continuations[self.row(layer, target_layer)]

    def prob(self, layer: int, target_layer: int | None = None) -> float:
        """P(expected token) at the first generated position for that pair."""
        if self.expected_prob is None:
            raise InterpError("no expected token was given: pass expected=TOKEN to the probe")
        return self.expected_prob[self.row(layer, target_layer)]

    def texts(self) -> dict[tuple[int, int], str]:
        return dict(zip(self.pairs, self.continuations, strict=True))

    def select(self, layers: Sequence[int]) -> PatchscopeResult:
        """The same readout narrowed to some source layers (their rows, in order)."""
        keep = [i for i, (s, _) in enumerate(self.pairs) if s in set(layers)]
        if not keep:
            raise SiteError(f"none of the source layers {list(layers)} was swept (swept: "
                            f"{sorted({s for s, _ in self.pairs})})")

        def pick(values: tuple[Any, ...] | None) -> Any:
            return None if values is None else tuple(values[i] for i in keep)

        narrowed = replace(self, pairs=pick(self.pairs), continuations=pick(self.continuations),
                           token_ids=pick(self.token_ids), expected_prob=pick(self.expected_prob),
                           margins=pick(self.margins), tokens=pick(self.tokens))
        return derived(narrowed, self, lambda r: r.select(layers))

    def table(self, failing: Sequence[int] = ()) -> str:
        """Layer -> continuation, one row per pair; rows in ``failing`` are marked ``>``."""
        src = self.source_tokens[self.source_position]
        tgt = self.target_tokens[self.target_position]
        lines = [
            f"patchscope of {src!r} (position {self.source_position}) in {self.source!r} -> "
            f"{self.target!r} at {tgt!r} (position {self.target_position})",
            f"  {'source':>6}  {'target':>6}"
            + (f"  {'P(' + repr(self.expected) + ')':>10}" if self.expected_prob else "")
            + "  continuation",
        ]
        for i, ((s, t), text) in enumerate(zip(self.pairs, self.continuations, strict=True)):
            prob = f"  {self.expected_prob[i]:>10.4f}" if self.expected_prob else ""
            lines.append(f"{'>' if i in failing else ' '} {s:>6}  {t:>6}{prob}  {text!r}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class SteeringResult:
    """The effect of adding ``coef * vector`` at (layer, site), per coefficient.

    ``values`` is the metric at the last position per coefficient: logit(target) -
    logit(foil), or log P(target) when there is no foil (None without a target); ``delta``
    is its change from the unsteered ``baseline``; ``kl`` is KL(unsteered || steered) of the
    next-token distributions (nats). Coefficient 0 is the unsteered run itself.
    """

    model: str
    prompt: str
    layer: int
    site: str
    positions: str | int
    vector_norm: float
    coefs: tuple[float, ...]
    target: str | None
    foil: str | None
    baseline: float | None
    values: np.ndarray | None
    kl: np.ndarray
    baseline_top: tuple[tuple[str, float], ...]
    steered_top: tuple[tuple[tuple[str, float], ...], ...]
    baseline_text: str | None = None
    texts: tuple[str, ...] | None = None
    sampled: bool = False
    # per generation (baseline first, then per coefficient): each token and step margin
    tokens: tuple[tuple[str, ...], ...] | None = None
    margins: tuple[tuple[float, ...], ...] | None = None
    # the delta of each random control vector of the same norm (``control=N``), first coef
    controls: tuple[float, ...] = ()
    measure: str | None = None  # the metric= asked for (metrics.label); None: the default

    @property
    def metric(self) -> str:
        if self.measure is not None:
            return self.measure
        if self.target is None:
            return "none"
        return "logit diff" if self.foil is not None else "log prob"

    @property
    def delta(self) -> np.ndarray:
        """values - baseline per coefficient (exactly 0 at coef 0)."""
        if self.values is None or self.baseline is None:
            raise InterpError("no target was given: pass target= (and foil=) to measure a delta")
        return self.values - self.baseline

    def index(self, coef: float) -> int:
        if coef not in self.coefs:
            raise InterpError(f"coef {coef} was not swept (swept: {list(self.coefs)})")
        return self.coefs.index(coef)

    def text(self, coef: float) -> str:
        """The steered generation for ``coef``."""
        if self.texts is None:
            raise InterpError("nothing was generated: pass max_new_tokens= to steer")
        return self.texts[self.index(coef)]

    def table(self, failing: Sequence[int] = ()) -> str:
        """Baseline vs steered: metric, delta, KL and top-5 per coefficient, then the texts."""
        what = "" if self.target is None else f"{self.metric} of {self.target!r}" \
            if self.measure is not None else (
            f"{self.target!r} - {self.foil!r} logit diff" if self.foil is not None
            else f"log P({self.target!r})")
        lines = [
            f"steering at {self.site}@{self.layer} (vector norm {self.vector_norm:.3g}, "
            f"positions {self.positions}) on {self.prompt!r}"
            + (f": {what} at the last position" if what else ""),
            f"  {'coef':>8}  {'value':>8}  {'delta':>8}  {'KL':>7}  top-5 next tokens",
        ]

        def tops(items: tuple[tuple[str, float], ...]) -> str:
            return ", ".join(f"{s!r} {p:.2f}" for s, p in items[:5])

        base = "" if self.baseline is None else f"{self.baseline:>8.3f}"
        lines.append(f"  {'baseline':>8}  {base:>8}  {'':>8}  {'':>7}  {tops(self.baseline_top)}")
        for i, coef in enumerate(self.coefs):
            value = "" if self.values is None else f"{self.values[i]:>8.3f}"
            delta = "" if self.values is None else f"{self.delta[i]:>+8.3f}"
            lines.append(f"{'>' if i in failing else ' '} {coef:>8g}  {value:>8}  {delta:>8}  "
                         f"{self.kl[i]:>7.3f}  {tops(self.steered_top[i])}")
        if self.texts is not None:
            how = "sampled" if self.sampled else "greedy"
            lines.append(f"  {how} generations:")
            lines.append(f"  {'baseline':>8}  {self.baseline_text!r}")
            for i, coef in enumerate(self.coefs):
                lines.append(f"{'>' if i in failing else ' '} {coef:>8g}  {self.texts[i]!r}")
        return "\n".join(lines)


ATTENTION_KINDS = ("previous_token", "induction", "first_token", "self", "entropy")
# Label thresholds, checked in this order; a head meeting none is "mixed".
LABEL_THRESHOLDS: dict[str, float] = {
    "induction": 0.4, "previous_token": 0.5, "self": 0.5, "first_token": 0.6,
}


def attention_labels(
    scores: dict[str, np.ndarray], thresholds: dict[str, float] | None = None
) -> tuple[tuple[str, ...], ...]:
    """A label per head: the first kind (induction, previous_token, self, first_token) whose
    score reaches its threshold, else "mixed"."""
    limits = dict(LABEL_THRESHOLDS)
    for kind, value in (thresholds or {}).items():
        if kind not in limits:
            raise InterpError(f"no label threshold {kind!r}: use {', '.join(limits)}")
        limits[kind] = float(value)
    n_layers, n_heads = scores["induction"].shape
    return tuple(
        tuple(next((k for k, t in limits.items() if scores[k][layer, head] >= t), "mixed")
              for head in range(n_heads))
        for layer in range(n_layers)
    )


@dataclass(frozen=True, eq=False)
class AttentionResult:
    """Per-head attention scores [layers, heads] by kind, a label per head, and the patterns
    [layers, heads, query, key] of the prompt (the repeated random sequence when None)."""

    model: str
    prompt: str | None
    str_tokens: tuple[str, ...]
    scores: dict[str, np.ndarray]
    labels: tuple[tuple[str, ...], ...]
    patterns: np.ndarray
    seed: int = 0
    n: int = 20
    selected: tuple[tuple[int, int], ...] | None = None  # set by select(): snapshot these only

    def select(self, heads: Sequence[tuple[int, int]]) -> AttentionResult:
        """The same summary narrowed to some heads: snapshots store and compare only them."""
        chosen = tuple(self.head_index(*h) for h in heads)
        return derived(replace(self, selected=chosen), self, lambda r: r.select(chosen))

    @property
    def n_layers(self) -> int:
        return len(self.labels)

    @property
    def n_heads(self) -> int:
        return len(self.labels[0])

    def head_index(self, layer: int, head: int) -> tuple[int, int]:
        """(layer, head), each negative from the end, as non-negative indices."""
        return (checks.index(layer, self.n_layers, what="layer", owner=self.model, unit="layers"),
                checks.index(head, self.n_heads, what="head", owner=self.model, unit="heads"))

    def score(self, kind: str, layer: int, head: int) -> float:
        if kind not in ATTENTION_KINDS:
            raise InterpError(f"unknown attention kind {kind!r}: use {', '.join(ATTENTION_KINDS)}")
        li, hi = self.head_index(layer, head)
        return float(self.scores[kind][li, hi])

    def label(self, layer: int, head: int) -> str:
        li, hi = self.head_index(layer, head)
        return self.labels[li][hi]

    def heads(self, label: str) -> list[tuple[int, int]]:
        """Every (layer, head) with this label."""
        return [(layer, head) for layer, row in enumerate(self.labels)
                for head, got in enumerate(row) if got == label]

    def best(self, kind: str, k: int = 5) -> list[tuple[int, int]]:
        """The ``k`` heads with the highest score of ``kind``."""
        flat = np.argsort(-self.scores[kind], axis=None, kind="stable")[:k]
        layers, heads = np.unravel_index(flat, self.scores[kind].shape)
        return [(int(layer), int(head)) for layer, head in zip(layers, heads, strict=True)]

    def table(self, heads: Sequence[tuple[int, int]], mark: Sequence[tuple[int, int]] = ()) -> str:
        """One row per head: every score and the label; heads in ``mark`` flagged ``>``."""
        where = "the repeated random sequence" if self.prompt is None else repr(self.prompt)
        lines = [f"attention heads of {self.model} on {where} (induction on {self.n} seeded "
                 f"random tokens x 2, seed {self.seed})",
                 f"  {'head':>7}" + "".join(f"  {k:>14}" for k in ATTENTION_KINDS) + "  label"]
        for layer, head in heads:
            cells = "".join(f"  {self.scores[k][layer, head]:>14.3f}" for k in ATTENTION_KINDS)
            flag = ">" if (layer, head) in mark else " "
            lines.append(f"{flag} {f'L{layer}H{head}':>7}{cells}  {self.labels[layer][head]}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class AblationResult:
    """A metric with a set of parts ablated, and with random sets like it (the controls).

    ``mode`` "necessity": the set itself is ablated and ``value`` is the drop, clean -
    ablated. ``mode`` "sufficiency": every other part of the same kinds is ablated and
    ``value`` is the faithfulness, ablated / clean (Wang et al. 2022). ``controls`` holds the
    metric for each of ``control_sets`` (random sets of as many parts of each kind) in place
    of the set; ``metric`` names the metric (``metrics.label``).
    """

    model: str
    prompt: str
    answer: str | None
    foil: str | None
    parts: tuple[str, ...]
    method: str
    mode: str
    clean: float
    ablated: float
    controls: tuple[float, ...] = ()
    control_sets: tuple[tuple[str, ...], ...] = ()
    metric: str = "logit diff"

    @property
    def value_name(self) -> str:
        return "drop" if self.mode == "necessity" else "faithfulness"

    def value_of(self, ablated: float) -> float:
        """The drop or faithfulness a run scoring ``ablated`` has."""
        if self.mode == "necessity":
            return self.clean - ablated
        if self.clean == 0:
            raise InterpError(f"the clean {self.metric} is 0: faithfulness (ablated / clean) is "
                              "undefined; use another metric or prompt")
        return ablated / self.clean

    @property
    def value(self) -> float:
        return self.value_of(self.ablated)

    @property
    def control_values(self) -> np.ndarray:
        return np.array([self.value_of(c) for c in self.controls])

    @property
    def beaten(self) -> float:
        """The share of controls whose value is below the set's (ties count half)."""
        return beaten(self.value, self.control_values)

    @property
    def measured(self) -> str:
        return metrics.describe(self.metric, self.answer, self.foil)

    @property
    def described(self) -> str:
        """``ablating L9H6, L9H9`` or ``keeping only ...``, with the method."""
        verb = "ablating" if self.mode == "necessity" else "ablating all but"
        return f"{verb} {', '.join(self.parts)} ({self.method} ablation)"


def beaten(value: float, controls: np.ndarray) -> float:
    """The share of ``controls`` below ``value``, ties counting half (0 without controls)."""
    if not len(controls):
        return 0.0
    return float(((controls < value).sum() + 0.5 * (controls == value).sum()) / len(controls))
