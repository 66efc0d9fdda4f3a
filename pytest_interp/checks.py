"""base layer: argument checks, one per concern, each raising one InterpError line (no torch, no
numpy).

Expectations call these from ``__post_init__`` (at collection, so they need no model); results,
probes and adapters call ``index`` for every layer, head and position range.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Collection, Sized
from typing import Any, TypeVar

from .errors import InterpError, SiteError

T = TypeVar("T")
S = TypeVar("S")


def is_int(value: object) -> bool:
    """An integer that is not a bool (numpy integers count)."""
    return not isinstance(value, bool) and hasattr(value, "__index__") \
        and not isinstance(value, str | bytes)


def index(value: object, size: int, *, what: str, owner: str, unit: str) -> int:
    """``value`` as an index into ``size`` items (negative counts from the end), or one line
    naming the valid range: ``layer 3 is out of range for M with 3 layers: use 0..2 (or
    -3..-1 from the end)``."""
    if not is_int(value):
        raise SiteError(f"{what} must be an int, got {value!r}")
    i = int(value)  # type: ignore[call-overload]
    if not -size <= i < size:
        raise SiteError(
            f"{what} {i} is out of range for {owner} with {size} {unit}: use 0..{size - 1} "
            f"(or -{size}..-1 from the end)"
        )
    return i % size


def position(value: object, n: int, *, what: str = "position", prompt: str | None = None,
             or_token: bool = False) -> int:
    """``value`` as a position in an ``n``-token prompt (negative from the end), or one line:
    ``position 5 is outside the 5-token prompt 'Hi there': use 0..4 or -5..-1``."""
    if not is_int(value) or not -n <= int(value) < n:  # type: ignore[call-overload]
        where = f" {prompt!r}" if prompt is not None else ""
        token = ", or a token string" if or_token else ""
        raise SiteError(f"{what} {value!r} is outside the {n}-token prompt{where}: use "
                        f"0..{n - 1} or -{n}..-1{token}")
    return int(value) % n  # type: ignore[call-overload]


def text(name: str, value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise InterpError(f"{name} must be a non-empty string, got {value!r}")
    return value


def texts(name: str, value: object) -> tuple[str, ...]:
    """A non-empty string, or a non-empty list of them, as a tuple."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or not all(
            isinstance(x, str) and x for x in items):
        raise InterpError(f"{name} must be a non-empty string or a list of them, got {value!r}")
    return tuple(items)


def integer(name: str, value: object, *, minimum: int | None = None) -> None:
    """None, or an int (not a bool) of at least ``minimum``."""
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise InterpError(f"{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise InterpError(f"{name} must be >= {minimum}, got {value}")


def required_int(name: str, value: object, *, minimum: int | None = None) -> None:
    """An int (not None)."""
    if value is None:
        raise InterpError(f"{name} must be an int, got None")
    integer(name, value, minimum=minimum)


def number(name: str, value: object) -> None:
    """None, or a finite int or float (not a bool)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InterpError(f"{name} must be a finite number, got {value!r}")


def probability(name: str, value: object) -> None:
    """None, or a number in (0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value) \
            or not 0 < value <= 1:
        raise InterpError(f"{name} must be a probability in (0, 1], got {value!r}")


def bounds(low_name: str, low: float | None, high_name: str, high: float | None) -> None:
    """Two optional finite bounds, low <= high."""
    number(low_name, low)
    number(high_name, high)
    if low is not None and high is not None and low > high:
        raise InterpError(f"{low_name}={low} is greater than {high_name}={high}")


def outside(value: float, low: float | None, high: float | None,
            names: tuple[str, str] = ("min", "max")) -> list[str]:
    """How ``value`` misses [low, high], one phrase a bound: ``expected >= 3 (min=3)``."""
    problems = []
    if low is not None and value < low:
        problems.append(f"expected >= {low} ({names[0]}={low})")
    if high is not None and value > high:
        problems.append(f"expected <= {high} ({names[1]}={high})")
    return problems


def choice(name: str, value: T, choices: Collection[T], *, style: str = "{name} must be one "
           "of {choices}, got {value!r}") -> T:
    """``value`` if it is one of ``choices``, else one line listing them."""
    if value not in choices:
        listed = ", ".join(str(c) for c in choices)
        raise InterpError(style.format(name=name, value=value, choices=listed))
    return value


def int_pair(name: str, value: object, what: str) -> tuple[int, int] | None:
    """None, or a pair of ints as a tuple (``what`` names the pair, e.g. "(layer, head)")."""
    if value is None:
        return None
    if not isinstance(value, tuple | list) or len(value) != 2 or any(
            isinstance(x, bool) or not isinstance(x, int) for x in value):
        raise InterpError(f"{name} must be a {what} pair of ints, got {value!r}")
    return int(value[0]), int(value[1])


def layers(name: str, value: object) -> int | tuple[int, ...]:
    """An int, or a non-empty list/tuple/range of ints (as a tuple)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list | tuple | range) and value and all(
            isinstance(x, int) and not isinstance(x, bool) for x in value):
        return tuple(value)
    raise InterpError(f"{name} must be an int or a non-empty list of ints, got {value!r}")


def token_spec(name: str, value: object) -> None:
    """A token string, an int position, or (token string, k)."""
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


def build(spec: type[S], what: str, arguments: dict[str, Any]) -> S:
    """``spec(**arguments)`` for a probe's spec dataclass, or one InterpError naming an
    unknown argument (with the closest one) and the arguments ``what`` takes."""
    names = [f.name for f in dataclasses.fields(spec)]  # type: ignore[arg-type]
    for key in arguments:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InterpError(f"{what} got an unknown argument {key!r}{hint}; it takes "
                              f"{', '.join(names)}")
    return spec(**arguments)


def one_prompt(kind: str, value: object, name: str = "prompt") -> None:
    """Probes read one prompt; a list gets one line naming the dataset way instead."""
    if not isinstance(value, str):
        got = f"a {type(value).__name__} of {len(value)}" if isinstance(value, Sized) else \
            repr(value)
        raise InterpError(f"{kind} takes one {name} string, got {got}: for a dataset use "
                          f"@pytest.mark.{kind}(prompts=...) or pytest_interp.dataset(model, "
                          f"{kind!r}, prompts, ...)")


