"""base layer: session settings read from options/ini, free of torch so the plugin stays cheap."""

from __future__ import annotations

import re
from dataclasses import KW_ONLY, dataclass
from typing import Literal

from . import checks
from .errors import InterpError

BackendName = Literal["transformer_lens", "nnsight"]
DeviceName = Literal["cpu", "cuda", "auto"]
DtypeName = Literal["float32", "bfloat16", "float16"]

BACKENDS: tuple[BackendName, ...] = ("transformer_lens", "nnsight")
DEVICES: tuple[DeviceName, ...] = ("cpu", "cuda", "auto")
DTYPES: tuple[DtypeName, ...] = ("float32", "bfloat16", "float16")
Inconclusives = Literal["fail", "pass", "skip"]
INCONCLUSIVES: tuple[Inconclusives, ...] = ("fail", "pass", "skip")
Drifts = Literal["fail", "report"]
DRIFTS: tuple[Drifts, ...] = ("fail", "report")
DEFAULT_MEMO_BYTES = 2 * 1024**3


def check_budget(value: object, name: str = "max_drift") -> float:
    """A drift budget: a number of noise floors >= 1 (1: nothing beyond the noise floor)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise InterpError(f"{name} is a number of noise floors >= 1 (1 allows nothing beyond "
                          f"the noise floor), got {value!r}")
    return float(value)
# The patchscope identity prompt (Ghandeharioun et al. 2024) and its placeholder token.
IDENTITY_PROMPT = "cat->cat; 135->135; hello->hello; ?->"
PLACEHOLDER = "?"

REMOTE_NEEDS_NNSIGHT = ("--interp-remote runs models on NDIF through nnsight: add "
                        "--interp-backend nnsight")

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def parse_bytes(text: str, what: str = "interp_memory") -> int:
    """Parse a memory size such as ``2GiB``, ``512MB`` or ``1000000`` (``what`` names it in
    the error; "" for none)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not match or match.group(2).lower() not in _UNITS:
        raise InterpError(
            f"{what} {text!r}".lstrip() + " is not a size: write it like 2GiB, 512MiB or 1000000"
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_bool(text: str | bool | None, what: str) -> bool | None:
    """Parse ``true``/``false``/``auto`` (auto and empty mean None: the tokenizer decides)."""
    if text is None or isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("", "auto", "none", "default"):
        return None
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise InterpError(f"{what} {text!r}".lstrip() + " is not a boolean: write true, false or "
                      "auto")


_IS_NOT_ONE_OF = "{name} {value!r} is not one of: {choices}"


@dataclass(frozen=True)
class ModelRequest:
    """Which model a test wants: one loaded instance per distinct request per session."""

    spec: str
    backend: BackendName = "transformer_lens"
    device: DeviceName = "cpu"
    dtype: DtypeName = "float32"
    prepend_bos: bool | None = None
    remote: bool = False  # run on NDIF through nnsight; only config + tokenizer load here
    perturbation: str | None = None  # a benign variant for noise floors (perturb_weights)

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise InterpError(
                "no model given: pass --interp-model SPEC, set interp_model in the ini file, "
                "or mark the test with @pytest.mark.interp_model('SPEC')"
            )
        checks.choice("interp backend", self.backend, BACKENDS, style=_IS_NOT_ONE_OF)
        checks.choice("interp device", self.device, DEVICES, style=_IS_NOT_ONE_OF)
        checks.choice("interp dtype", self.dtype, DTYPES, style=_IS_NOT_ONE_OF)
        if self.remote and self.backend != "nnsight":
            raise InterpError(REMOTE_NEEDS_NNSIGHT)


@dataclass(frozen=True)
class ModelOverride:
    """``@pytest.mark.interp_model``: what a test, class or module changes about the session's
    model request (None keeps the session's value). Its signature is the marker's."""

    spec: str
    _: KW_ONLY
    backend: BackendName | None = None
    device: DeviceName | None = None
    dtype: DtypeName | None = None
    prepend_bos: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.spec, str) or not self.spec.strip():
            raise InterpError(f"spec must be a non-empty string, got {self.spec!r}")
        for name, choices in (("backend", BACKENDS), ("device", DEVICES), ("dtype", DTYPES)):
            value = getattr(self, name)
            if value is not None:
                checks.choice(name, value, choices, style="{name}={value!r} is not one of: "
                                                          "{choices}")
        object.__setattr__(self, "prepend_bos", parse_bool(self.prepend_bos, "prepend_bos"))
