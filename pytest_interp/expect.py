"""Expectations: frozen checks built from markers, run against a model, with readable failures.

Each expectation validates itself twice: ``__post_init__`` checks what needs no model (types,
combinations), ``validate(model)`` at collection checks what does (layer range, single-token
targets, positions, lens files). ``check(model)`` returns None or the failure text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import InterpError
from .settings import IDENTITY_PROMPT, PLACEHOLDER

if TYPE_CHECKING:
    from torch import Tensor

    from .model import InterpModel
    from .results import (
        AttentionResult,
        LensResult,
        PatchingResult,
        PatchscopeResult,
        SteeringResult,
    )


def _int(name: str, value: object, *, minimum: int | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InterpError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise InterpError(f"{name} must be >= {minimum}, got {value}")


def _prob(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or not 0 < value <= 1:
        raise InterpError(f"{name} must be a probability in (0, 1], got {value!r}")


def _text(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InterpError(f"{name} must be a non-empty string, got {value!r}")


@dataclass(frozen=True)
class LensExpectation:
    """``@pytest.mark.lens``: where a target token shows up in the residual stream."""

    prompt: str
    target: str
    layer: int | None = None
    position: int = -1
    top_k: int | None = None
    min_prob: float | None = None
    emerges_by: int | None = None
    lens: str = "logit"

    def __post_init__(self) -> None:
        _text("prompt", self.prompt)
        _text("target", self.target)
        _text("lens", self.lens)
        _int("layer", self.layer)
        if self.position is None:
            raise InterpError("position must be an int, got None")
        _int("position", self.position)
        _int("top_k", self.top_k, minimum=1)
        _int("emerges_by", self.emerges_by)
        _prob("min_prob", self.min_prob)
        if self.top_k is None and self.min_prob is None and self.emerges_by is None:
            raise InterpError("no check given: pass top_k=, min_prob= or emerges_by=")
        if self.emerges_by is not None and self.layer is not None:
            raise InterpError(
                "layer= and emerges_by= are exclusive: emerges_by checks every layer from it on"
            )
        if self.emerges_by is not None and self.min_prob is not None:
            raise InterpError(
                "min_prob= does not combine with emerges_by= (emergence is by rank: use top_k=)"
            )
        if self.emerges_by is None and self.layer is None:
            raise InterpError("top_k= and min_prob= need layer= (a block index, -1 for the last)")

    def validate(self, model: InterpModel) -> None:
        """Model-dependent checks, at collection time."""
        info = model.info
        if self.layer is not None:
            info.check_layer(self.layer)
        if self.emerges_by is not None:
            info.check_layer(self.emerges_by, "emerges_by")
        n_tokens = model.tokens(self.prompt).length
        if not -n_tokens <= self.position < n_tokens:
            raise InterpError(
                f"position {self.position} is outside the prompt {self.prompt!r} "
                f"({n_tokens} tokens): use 0..{n_tokens - 1} or -{n_tokens}..-1"
            )
        model.vocab.id(self.target)
        if self.lens != "logit":
            from .probes.lens import TunedLens

            TunedLens.load(self.lens).check_fits(model)

    def result(self, model: InterpModel) -> LensResult:
        if self.lens == "logit":
            return model.logit_lens(self.prompt, positions=self.position)
        return model.tuned_lens(self.prompt, lens=self.lens, positions=self.position)

    def check(self, model: InterpModel) -> str | None:
        return self.judge(self.result(model))

    def judge(self, result: LensResult) -> str | None:
        """The failure text, or None when the result meets every threshold."""
        target, pos = self.target, self.position
        problems: list[str] = []
        mark = None
        if self.layer is not None:
            layer = result.layer_index(self.layer)
            mark = layer
            rank, prob = result.rank(target, layer, pos), result.prob(target, layer, pos)
            if self.top_k is not None and rank >= self.top_k:
                problems.append(
                    f"{target!r} has rank {rank} at layer {layer}, expected top_k={self.top_k} "
                    f"(rank < {self.top_k})"
                )
            if self.min_prob is not None and prob < self.min_prob:
                problems.append(
                    f"{target!r} has prob {prob:.4f} at layer {layer}, expected "
                    f"min_prob={self.min_prob}"
                )
        if self.emerges_by is not None:
            top_k = self.top_k or 1
            by = result.layer_index(self.emerges_by)
            mark = by
            emerged = result.emergence_layer(target, top_k=top_k, position=pos)
            if emerged is None:
                problems.append(
                    f"{target!r} is not in the top-{top_k} at the last layer, expected it to "
                    f"emerge by layer {by} (emerges_by={self.emerges_by})"
                )
            elif emerged > by:
                problems.append(
                    f"{target!r} stays in the top-{top_k} only from layer {emerged}, expected by "
                    f"layer {by} (emerges_by={self.emerges_by})"
                )
        if not problems:
            return None
        head = "\n".join(f"lens: {p}" for p in problems)
        return f"{head}\n{result.table(target, position=pos, mark=mark)}"


def _number(name: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InterpError(f"{name} must be a finite number, got {value!r}")


@dataclass(frozen=True)
class LogitDiffExpectation:
    """``@pytest.mark.logit_diff``: the model's own answer-vs-foil preference."""

    prompt: str
    answer: str
    foil: str
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        for name in ("prompt", "answer", "foil"):
            _text(name, getattr(self, name))
        _number("min", self.min)
        _number("max", self.max)
        if self.min is None and self.max is None:
            raise InterpError("no check given: pass min= and/or max=")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise InterpError(f"min={self.min} is greater than max={self.max}")

    def validate(self, model: InterpModel) -> None:
        model.tokens(self.prompt)
        model.vocab.id(self.answer)
        model.vocab.id(self.foil)

    def check(self, model: InterpModel) -> str | None:
        value = model.logit_diff(self.prompt, self.answer, self.foil)
        problems = []
        if self.min is not None and value < self.min:
            problems.append(f"expected >= {self.min} (min={self.min})")
        if self.max is not None and value > self.max:
            problems.append(f"expected <= {self.max} (max={self.max})")
        if not problems:
            return None
        import torch

        probs = torch.softmax(model.run(self.prompt).logits[0, -1].float(), -1)
        top = probs.topk(5)
        tops = ", ".join(f"{model.vocab.decode_one(int(i))!r} {float(p):.2f}"
                         for p, i in zip(top.values, top.indices, strict=True))
        return (f"logit_diff: {self.answer!r} - {self.foil!r} at the last position of "
                f"{self.prompt!r} is {value:.3f}, {' and '.join(problems)}\n"
                f"  next-token top-5: {tops}")


@dataclass(frozen=True)
class PatchingExpectation:
    """``@pytest.mark.activation_patching``: where (layer, position, head) a behaviour lives."""

    clean: str
    corrupted: str
    answer: str
    foil: str
    site: str = "resid_pre"
    layer: int | None = None
    position: int | str | None = None
    head: int | None = None
    min_recovery: float | None = None
    max_recovery: float | None = None
    peak_layer: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        from .probes.patching import PATCH_SITES

        for name in ("clean", "corrupted", "answer", "foil"):
            _text(name, getattr(self, name))
        if self.site not in PATCH_SITES:
            raise InterpError(f"site {self.site!r} cannot be patched: use one of "
                              f"{', '.join(PATCH_SITES)}")
        _int("layer", self.layer)
        _int("head", self.head, minimum=0)
        if self.position is not None and not isinstance(self.position, str):
            _int("position", self.position)
        _number("min_recovery", self.min_recovery)
        _number("max_recovery", self.max_recovery)
        if self.peak_layer is not None:
            peak = self.peak_layer
            if not isinstance(peak, tuple | list) or len(peak) != 2 or any(
                    isinstance(x, bool) or not isinstance(x, int) for x in peak):
                raise InterpError(f"peak_layer must be a (low, high) pair of ints, got {peak!r}")
            object.__setattr__(self, "peak_layer", tuple(peak))
        if self.min_recovery is None and self.max_recovery is None and self.peak_layer is None:
            raise InterpError("no check given: pass min_recovery=, max_recovery= or peak_layer=")
        heads = self.site == "head_out"
        if self.head is not None and not heads:
            raise InterpError(f"head= only applies to site='head_out', not {self.site!r}")
        if heads and self.position is not None and self.head is None:
            raise InterpError("site='head_out' with position= needs head= (which head)")
        if self.peak_layer is not None:
            if self.layer is not None:
                raise InterpError("peak_layer= looks across layers: do not also pass layer=")
            if not heads and self.position is None:
                raise InterpError("peak_layer= needs position= (which column's peak)")
            if heads and self.head is None:
                raise InterpError("peak_layer= with site='head_out' needs head=")

    @property
    def per_position(self) -> bool:
        return self.site != "head_out" or self.position is not None

    def validate(self, model: InterpModel) -> None:
        from .probes.patching import paired_tokens

        clean, _ = paired_tokens(model, self.clean, self.corrupted)
        model.vocab.id(self.answer)
        model.vocab.id(self.foil)
        if self.layer is not None:
            model.info.check_layer(self.layer)
        if self.head is not None:
            model.info.check_head(self.head)
        if self.peak_layer is not None:
            for bound in self.peak_layer:
                model.info.check_layer(bound, "peak_layer bound")
        if self.position is not None:
            from .results import token_position

            token_position(clean.strs[0], self.position, self.clean)

    def check(self, model: InterpModel) -> str | None:
        result = model.activation_patching(
            self.clean, self.corrupted, answer=self.answer, foil=self.foil,
            site=self.site,  # type: ignore[arg-type]
            per_position=self.per_position,
        )
        return self.judge(result)

    def _where(self, result: PatchingResult, layer: int, col: int) -> str:
        parts = [f"layer {layer}"]
        if self.site == "head_out":
            parts.append(f"head {self.head if self.per_position else col}")
        if self.per_position:
            pos = col
            token = result.clean_tokens[pos]
            given = self.position if isinstance(self.position, int) else pos
            parts.append(f"position {given} ({token!r})")
        return ", ".join(parts)

    def judge(self, result: PatchingResult) -> str | None:
        """The failure text, or None when every selected cell meets the thresholds."""
        values, _, _ = result.grid_2d(self.head if self.per_position else None)
        n_layers, n_cols = values.shape
        layers = [result.layer_index(self.layer)] if self.layer is not None else list(
            range(n_layers))
        if self.site == "head_out" and not self.per_position:
            cols = [self.head] if self.head is not None else list(range(n_cols))
        elif self.position is not None:
            cols = [result.position_index(self.position)]
        else:
            cols = list(range(n_cols))
        cells = [(layer, col) for layer in layers for col in cols]
        problems: list[str] = []
        mark = None
        if self.min_recovery is not None:
            layer, col = min(cells, key=lambda c: values[c])
            if values[layer, col] < self.min_recovery:
                mark = mark or (layer, col)
                problems.append(
                    f"{self.site} at {self._where(result, layer, col)} recovers "
                    f"{values[layer, col]:.2f} of the clean logit diff, expected "
                    f"min_recovery={self.min_recovery}"
                )
        if self.max_recovery is not None:
            layer, col = max(cells, key=lambda c: values[c])
            if values[layer, col] > self.max_recovery:
                mark = mark or (layer, col)
                problems.append(
                    f"{self.site} at {self._where(result, layer, col)} recovers "
                    f"{values[layer, col]:.2f} of the clean logit diff, expected "
                    f"max_recovery={self.max_recovery}"
                )
        if self.peak_layer is not None:
            col = cols[0]
            peak = int(values[:, col].argmax())
            lo, hi = (result.layer_index(b) for b in self.peak_layer)
            if not lo <= peak <= hi:
                mark = mark or (peak, col)
                where = self._where(result, peak, col).split(", ", 1)[1]
                problems.append(
                    f"{self.site} recovery at {where} peaks at layer {peak} "
                    f"({values[peak, col]:.2f}), expected peak_layer in {self.peak_layer}"
                )
        if not problems:
            return None
        head = "\n".join(f"activation_patching: {p}" for p in problems)
        grid = result.grid(mark=mark, head=self.head if self.per_position else None)
        return f"{head}\n{grid}"


def _layer_list(
    name: str, value: object, *, optional: bool = False
) -> int | tuple[int, ...] | None:
    """An int, or a non-empty list/tuple/range of ints (kept as a tuple)."""
    if value is None and optional:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple | range) and value and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value):
        return tuple(value)
    raise InterpError(f"{name} must be an int or a non-empty list of ints, got {value!r}")


def _token_spec(name: str, value: object) -> None:
    if isinstance(value, str) and value:
        return
    if isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str) and value[0] \
            and isinstance(value[1], int) and not isinstance(value[1], bool):
        return
    raise InterpError(
        f"{name} must be a token string, an int position or (token string, k), got {value!r}"
    )


@dataclass(frozen=True)
class PatchscopeExpectation:
    """``@pytest.mark.patchscope``: what a hidden state says when decoded by a target prompt."""

    source: str
    token: int | str | tuple[str, int]
    layer: int | tuple[int, ...]
    expect: str | tuple[str, ...]
    target: str = IDENTITY_PROMPT
    target_layer: int | tuple[int, ...] | None = None
    target_token: int | str | tuple[str, int] = PLACEHOLDER
    max_new_tokens: int = 5
    mode: str = "all"

    def __post_init__(self) -> None:
        _text("source", self.source)
        _text("target", self.target)
        _token_spec("token", self.token)
        _token_spec("target_token", self.target_token)
        object.__setattr__(self, "layer", _layer_list("layer", self.layer))
        object.__setattr__(self, "target_layer",
                           _layer_list("target_layer", self.target_layer, optional=True))
        expect = (self.expect,) if isinstance(self.expect, str) else self.expect
        if not isinstance(expect, list | tuple) or not expect or not all(
                isinstance(e, str) and e.strip() for e in expect):
            raise InterpError(
                f"expect must be a non-blank string or a list of them, got {self.expect!r}"
            )
        object.__setattr__(self, "expect", tuple(expect))
        _int("max_new_tokens", self.max_new_tokens, minimum=1)
        if self.mode not in ("all", "any"):
            raise InterpError(f"mode must be 'all' or 'any', got {self.mode!r}")

    @property
    def expected(self) -> tuple[str, ...]:
        """``expect`` as a tuple (normalised in __post_init__)."""
        return self.expect if isinstance(self.expect, tuple) else (self.expect,)

    def validate(self, model: InterpModel) -> None:
        from .probes.patchscope import layer_pairs
        from .results import find_token

        layer_pairs(model, self.layer, self.target_layer)
        find_token(model.tokens(self.source).strs[0], self.token, self.source, "source")
        find_token(model.tokens(self.target).strs[0], self.target_token, self.target, "target")

    def check(self, model: InterpModel) -> str | None:
        return self.judge(model.patchscope(
            self.source, self.token, layer=self.layer, target=self.target,
            target_layer=self.target_layer, target_token=self.target_token,
            max_new_tokens=self.max_new_tokens, expected=self.expected[0].strip(),
        ))

    def judge(self, result: PatchscopeResult) -> str | None:
        """The failure text, or None when ``expect`` shows up where ``mode`` asks."""
        wanted = [e.strip() for e in self.expected]
        found = [any(w in text.strip() for w in wanted) for text in result.continuations]
        what = " or ".join(repr(w) for w in wanted)
        n = len(found)
        if self.mode == "all" and not all(found):
            failing = [i for i, ok in enumerate(found) if not ok]
            pairs = ", ".join(f"{s}->{t}" for s, t in (result.pairs[i] for i in failing))
            head = (f"patchscope: expected {what} in the continuation at every layer "
                    f"(mode='all'); {len(failing)} of {n} missing it (source->target layer): "
                    f"{pairs}")
        elif self.mode == "any" and not any(found):
            failing = list(range(n))
            head = (f"patchscope: expected {what} in the continuation at some layer "
                    f"(mode='any'); none of {n} has it")
        else:
            return None
        return f"{head}\n{result.table(failing)}"


def _texts(name: str, value: object, *, optional: bool = False) -> tuple[str, ...] | None:
    """A non-empty string, or a non-empty list of them, as a tuple."""
    if value is None and optional:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(
            isinstance(x, str) and x for x in items):
        raise InterpError(f"{name} must be a non-empty string or a list of them, got {value!r}")
    return tuple(items)


@dataclass(frozen=True)
class SteeringExpectation:
    """``@pytest.mark.steering``: how much a steering vector moves the output."""

    prompt: str
    layer: int
    coef: float | tuple[float, ...]
    target: str
    positive: str | tuple[str, ...] | None = None
    negative: str | tuple[str, ...] | None = None
    vector: str | None = None
    foil: str | None = None
    site: str = "resid_pre"
    positions: str | int = "all"
    min_delta: float | None = None
    max_delta: float | None = None
    generation_contains: str | tuple[str, ...] | None = None
    max_new_tokens: int = 20

    def __post_init__(self) -> None:
        from .probes.steering import STEER_SITES

        _text("prompt", self.prompt)
        _text("target", self.target)
        if self.foil is not None:
            _text("foil", self.foil)
        _int("layer", self.layer)
        if self.layer is None:
            raise InterpError("layer must be an int, got None")
        coefs = (self.coef,) if not isinstance(self.coef, list | tuple) else tuple(self.coef)
        if not coefs:
            raise InterpError("coef must be a number or a non-empty list of numbers, got []")
        for c in coefs:
            if c is None:
                raise InterpError("coef must be a finite number, got None")
            _number("coef", c)
        object.__setattr__(self, "coef", coefs)
        if self.site not in STEER_SITES:
            raise InterpError(f"site {self.site!r} cannot be steered: use one of "
                              f"{', '.join(STEER_SITES)}")
        if self.positions not in ("all", "last") and (
                isinstance(self.positions, bool) or not isinstance(self.positions, int)):
            raise InterpError(f"positions must be 'all', 'last' or an int N, got "
                              f"{self.positions!r}")
        if self.vector is not None:
            _text("vector", self.vector)
            if self.positive is not None or self.negative is not None:
                raise InterpError("pass either vector= or positive= and negative=, not both")
        elif self.positive is None or self.negative is None:
            raise InterpError("no vector: pass positive= and negative= prompts, or vector=FILE")
        else:
            pos, neg = _texts("positive", self.positive), _texts("negative", self.negative)
            assert pos is not None and neg is not None
            if len(pos) != len(neg):
                raise InterpError(f"{len(pos)} positive but {len(neg)} negative prompts: pass "
                                  "as many of each")
            object.__setattr__(self, "positive", pos if len(pos) > 1 else pos[0])
            object.__setattr__(self, "negative", neg if len(neg) > 1 else neg[0])
        _number("min_delta", self.min_delta)
        _number("max_delta", self.max_delta)
        object.__setattr__(self, "generation_contains",
                           _texts("generation_contains", self.generation_contains, optional=True))
        _int("max_new_tokens", self.max_new_tokens, minimum=1)
        if self.min_delta is None and self.max_delta is None and self.generation_contains is None:
            raise InterpError("no check given: pass min_delta=, max_delta= or generation_contains=")
        if self.min_delta is not None and self.max_delta is not None \
                and self.min_delta > self.max_delta:
            raise InterpError(f"min_delta={self.min_delta} is greater than "
                              f"max_delta={self.max_delta}")

    @property
    def coefs(self) -> tuple[float, ...]:
        return self.coef if isinstance(self.coef, tuple) else (self.coef,)

    def steering_vector(self, model: InterpModel) -> Tensor:
        if self.vector is not None:
            return model.load_vector(self.vector)
        assert self.positive is not None and self.negative is not None
        return model.steering_vector(self.positive, self.negative, layer=self.layer,
                                     site=self.site)  # type: ignore[arg-type]

    def validate(self, model: InterpModel) -> None:
        model.info.check_layer(self.layer)
        model.tokens(self.prompt)
        model.vocab.id(self.target)
        if self.foil is not None:
            model.vocab.id(self.foil)
        self.steering_vector(model)

    def result(self, model: InterpModel) -> SteeringResult:
        return model.steer(
            self.prompt, self.steering_vector(model), layer=self.layer, coef=self.coefs,
            site=self.site, positions=self.positions,  # type: ignore[arg-type]
            target=self.target, foil=self.foil,
            max_new_tokens=self.max_new_tokens if self.generation_contains else 0,
        )

    def check(self, model: InterpModel) -> str | None:
        return self.judge(self.result(model))

    def judge(self, result: SteeringResult) -> str | None:
        """The failure text, or None when every coefficient meets every check."""
        problems, failing = [], []
        delta = result.delta
        what = (f"{self.target!r} - {self.foil!r} logit diff" if self.foil is not None
                else f"log P({self.target!r})")
        for coef in self.coefs:
            i = result.index(coef)
            bad = []
            if self.min_delta is not None and delta[i] < self.min_delta:
                bad.append(f"coef {coef:g} moves the {what} by {delta[i]:+.3f}, expected "
                           f"min_delta={self.min_delta}")
            if self.max_delta is not None and delta[i] > self.max_delta:
                bad.append(f"coef {coef:g} moves the {what} by {delta[i]:+.3f}, expected "
                           f"max_delta={self.max_delta}")
            if self.generation_contains is not None:
                text = result.text(coef)
                if not any(w in text for w in self.generation_contains):
                    wanted = " or ".join(repr(w) for w in self.generation_contains)
                    bad.append(f"the coef {coef:g} generation {text!r} does not contain {wanted}")
            if bad:
                failing.append(i)
                problems.extend(bad)
        if not problems:
            return None
        head = "\n".join(f"steering: {p}" for p in problems)
        return f"{head}\n{result.table(failing)}"


@dataclass(frozen=True)
class AttentionExpectation:
    """``@pytest.mark.attention``: what a head (or some head) does."""

    prompt: str | None = None
    kind: str = "induction"
    head: tuple[int, int] | None = None
    min_score: float | None = None
    max_score: float | None = None

    def __post_init__(self) -> None:
        from .results import ATTENTION_KINDS

        if self.prompt is not None:
            _text("prompt", self.prompt)
        if self.kind not in ATTENTION_KINDS:
            raise InterpError(f"kind must be one of {', '.join(ATTENTION_KINDS)}, got "
                              f"{self.kind!r}")
        if self.head is not None:
            if not isinstance(self.head, tuple | list) or len(self.head) != 2 or any(
                    isinstance(x, bool) or not isinstance(x, int) for x in self.head):
                raise InterpError(f"head must be a (layer, head) pair of ints, got {self.head!r}")
            object.__setattr__(self, "head", tuple(self.head))
        _number("min_score", self.min_score)
        _number("max_score", self.max_score)
        if self.min_score is None and self.max_score is None:
            raise InterpError("no check given: pass min_score= and/or max_score=")
        if self.min_score is not None and self.max_score is not None \
                and self.min_score > self.max_score:
            raise InterpError(f"min_score={self.min_score} is greater than "
                              f"max_score={self.max_score}")

    def validate(self, model: InterpModel) -> None:
        if self.prompt is not None and model.tokens(self.prompt).length < 2:
            raise InterpError(f"the prompt {self.prompt!r} has one token: attention scores "
                              "need two or more")
        if self.head is not None:
            model.info.check_layer(self.head[0])
            model.info.check_head(self.head[1])

    def check(self, model: InterpModel) -> str | None:
        return self.judge(model.attention(self.prompt))

    def judge(self, result: AttentionResult) -> str | None:
        """The failure text, or None when the head (or, head=None, some head) is in range."""
        lo, hi = self.min_score, self.max_score

        def ok(layer: int, head: int) -> bool:
            value = result.score(self.kind, layer, head)
            return (lo is None or value >= lo) and (hi is None or value <= hi)

        bounds = " and ".join(f"{name}={v}" for name, v in (("min_score", lo), ("max_score", hi))
                              if v is not None)
        best = result.best(self.kind)
        if self.head is not None:
            layer, head = result.head_index(*self.head)
            if ok(layer, head):
                return None
            problem = (f"L{layer}H{head} has {self.kind} score "
                       f"{result.score(self.kind, layer, head):.3f} (label "
                       f"{result.label(layer, head)}), expected {bounds}")
            rows, mark = [(layer, head), *[h for h in best if h != (layer, head)]], [(layer, head)]
        else:
            if any(ok(layer, head) for layer in range(result.n_layers)
                   for head in range(result.n_heads)):
                return None
            top = best[0]
            problem = (f"no head's {self.kind} score meets {bounds}; the highest is "
                       f"L{top[0]}H{top[1]} at {result.score(self.kind, *top):.3f}")
            rows, mark = best, []
        return f"attention: {problem}\n{result.table(rows, mark)}"


Expectation = (LensExpectation | LogitDiffExpectation | PatchingExpectation
               | PatchscopeExpectation | SteeringExpectation | AttentionExpectation)
EXPECTATIONS: dict[str, type[Expectation]] = {  # marker name -> its expectation
    "lens": LensExpectation, "logit_diff": LogitDiffExpectation,
    "activation_patching": PatchingExpectation, "patchscope": PatchscopeExpectation,
    "steering": SteeringExpectation, "attention": AttentionExpectation,
}
