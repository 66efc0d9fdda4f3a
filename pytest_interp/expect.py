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

if TYPE_CHECKING:
    from .model import InterpModel
    from .results import LensResult


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
