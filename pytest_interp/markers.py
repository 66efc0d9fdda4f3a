"""Markers -> frozen dataclasses at collection time (no torch here).

Each marker is declared once: a signature (for binding and error messages) and a one-line
usage for ``pytest --markers``. Binding errors name the marker, the problem and the usage.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InterpError
from .settings import BACKENDS, DEVICES, DTYPES, IDENTITY_PROMPT, PLACEHOLDER, parse_bool

if TYPE_CHECKING:
    from .expect import Expectation


@dataclass(frozen=True)
class MarkerDef:
    """A marker: its name, its signature (a stub function) and its one-line usage."""

    name: str
    signature: Callable[..., None]
    help: str

    @property
    def usage(self) -> str:
        """``@pytest.mark.name(arg, *, key=default)``, as shown in error messages."""
        return f"@pytest.mark.{self.call}"

    @property
    def call(self) -> str:
        """``name(arg, *, key=default)``, as registered for ``pytest --markers``."""
        params = []
        for p in inspect.signature(self.signature).parameters.values():
            if p.kind is p.KEYWORD_ONLY and "*" not in params:
                params.append("*")
            params.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}")
        return f"{self.name}({', '.join(params)})"

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Bind marker arguments to the signature (defaults applied) or raise InterpError."""
        sig = inspect.signature(self.signature)
        known = list(sig.parameters)
        for key in kwargs:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise InterpError(f"unknown keyword {key!r}{hint}; usage: {self.usage}")
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as exc:
            raise InterpError(f"{exc}; usage: {self.usage}") from None
        bound.apply_defaults()
        return dict(bound.arguments)


def _interp_model(
    spec: str, *, backend: str | None = None, device: str | None = None,
    dtype: str | None = None, prepend_bos: bool | None = None,
) -> None: ...


def _lens(
    prompt: str, target: str, *, layer: int | None = None, position: int = -1,
    top_k: int | None = None, min_prob: float | None = None, emerges_by: int | None = None,
    lens: str = "logit",
) -> None: ...


def _logit_diff(
    prompt: str, *, answer: str, foil: str, min: float | None = None, max: float | None = None,
) -> None: ...


def _activation_patching(
    clean: str, corrupted: str, *, answer: str, foil: str, site: str = "resid_pre",
    layer: int | None = None, position: int | str | None = None, head: int | None = None,
    min_recovery: float | None = None, max_recovery: float | None = None,
    peak_layer: tuple[int, int] | None = None,
) -> None: ...


def _patchscope(
    source: str, token: int | str | tuple[str, int], *, layer: int | list[int],
    expect: str | list[str], target: str = IDENTITY_PROMPT, target_layer: int | None = None,
    target_token: int | str | tuple[str, int] = PLACEHOLDER, max_new_tokens: int = 5,
    mode: str = "all",
) -> None: ...


def _steering(
    prompt: str, *, layer: int, coef: float | list[float], target: str,
    positive: str | list[str] | None = None, negative: str | list[str] | None = None,
    vector: str | None = None, foil: str | None = None, site: str = "resid_pre",
    positions: str | int = "all", min_delta: float | None = None,
    max_delta: float | None = None, generation_contains: str | list[str] | None = None,
    max_new_tokens: int = 20,
) -> None: ...


def _attention(
    prompt: str | None = None, *, kind: str, head: tuple[int, int] | None = None,
    min_score: float | None = None, max_score: float | None = None,
) -> None: ...


INTERP_MODEL = MarkerDef(
    "interp_model", _interp_model,
    "run this test (class, module) on another model or backend; spec is an alias, "
    "a local HF directory or a .gguf file.",
)
LENS = MarkerDef(
    "lens", _lens,
    "assert where target shows up in the residual stream: top_k/min_prob at layer, or "
    "emerges_by=L (in the top_k from layer L on); lens='logit' or a tuned-lens folder.",
)
LOGIT_DIFF = MarkerDef(
    "logit_diff", _logit_diff,
    "assert logit(answer) - logit(foil) at the last position lies within [min, max].",
)
ACTIVATION_PATCHING = MarkerDef(
    "activation_patching", _activation_patching,
    "assert where a behaviour lives: recovery of the clean logit diff when a clean activation "
    "is patched into the corrupted run, at layer/position/head, or its peak_layer=(lo, hi).",
)
PATCHSCOPE = MarkerDef(
    "patchscope", _patchscope,
    "assert what a hidden state says: token's state after block layer (int or list), patched "
    "into target (identity prompt) and decoded greedily, contains expect at all/any layers.",
)
STEERING = MarkerDef(
    "steering", _steering,
    "assert what a steering vector does: positive - negative activations (or vector=FILE) "
    "added coef times at layer moves target - foil by min/max_delta, or steers generation.",
)
ATTENTION = MarkerDef(
    "attention", _attention,
    "assert what heads do: head=(layer, head)'s kind score (previous_token, induction, "
    "first_token, self, entropy) within [min_score, max_score]; head=None: some head.",
)
MARKERS: tuple[MarkerDef, ...] = (INTERP_MODEL, LENS, LOGIT_DIFF, ACTIVATION_PATCHING,
                                  PATCHSCOPE, STEERING, ATTENTION)


@dataclass(frozen=True)
class ModelOverride:
    """What an ``interp_model`` marker changes about the session's model request."""

    spec: str
    backend: str | None = None
    device: str | None = None
    dtype: str | None = None
    prepend_bos: bool | None = None


def parse_interp_model(args: tuple[Any, ...], kwargs: dict[str, Any]) -> ModelOverride:
    """Read an ``interp_model`` marker, validating every field (the spec must resolve)."""
    from .backends.loading import resolve_spec, validate

    bound = INTERP_MODEL.bind(args, kwargs)
    spec = bound["spec"]
    if not isinstance(spec, str) or not spec.strip():
        raise InterpError(f"spec must be a non-empty string, got {spec!r}")
    for name, choices in (("backend", BACKENDS), ("device", DEVICES), ("dtype", DTYPES)):
        value = bound[name]
        if value is not None and value not in choices:
            raise InterpError(f"{name}={value!r} is not one of: {', '.join(choices)}")
    validate(resolve_spec(spec))
    return ModelOverride(
        spec=spec, backend=bound["backend"], device=bound["device"], dtype=bound["dtype"],
        prepend_bos=parse_bool(bound["prepend_bos"], "prepend_bos"),
    )


_FILE_ARGS = {"lens": "lens", "steering": "vector"}  # marker -> its argument naming a file


def parse_expectation(
    marker: MarkerDef, args: tuple[Any, ...], kwargs: dict[str, Any], root: Path
) -> Expectation:
    """Read an expectation marker into its frozen dataclass (model-independent checks)."""
    from .expect import EXPECTATIONS

    bound = marker.bind(args, kwargs)
    key = _FILE_ARGS.get(marker.name)
    if key is not None:
        bound[key] = _rooted(bound[key], root)
    return EXPECTATIONS[marker.name](**bound)


def _rooted(value: Any, root: Path) -> Any:
    """A file argument as a string; a relative path is taken from the rootdir."""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and value != "logit" and not Path(value).is_absolute():
        return str(root / value)
    return value


EXPECTATION_MARKERS: tuple[MarkerDef, ...] = (LENS, LOGIT_DIFF, ACTIVATION_PATCHING, PATCHSCOPE,
                                              STEERING, ATTENTION)
