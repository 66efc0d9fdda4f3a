"""Random marker arguments: each is a clean pass/fail or one InterpError line, never a crash."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_interp.errors import InterpError
from pytest_interp.markers import EXPECTATION_MARKERS, parse_expectation
from pytest_interp.model import InterpModel

PROMPTS = st.one_of(
    st.sampled_from(["The cat sat on the", "The dog sat on the", "When Mary and John went",
                     "", " ", "é ü ∑ 漢字 🙂", "a " * 700]),
    st.text(max_size=30),
)
TOKENS = st.one_of(st.sampled_from([" on", " the", " cat", "?", " Xyzzyqux", "", "cat"]),
                   st.text(max_size=4))
NUMBERS = st.one_of(st.none(), st.integers(-100, 1000), st.floats(allow_nan=True),
                    st.sampled_from([math.nan, math.inf, -1.0, 0.5, 2]))
LAYERS = st.one_of(st.none(), st.integers(-100, 1000), st.sampled_from([0, 1, 2, -1]),
                   st.lists(st.integers(-5, 5), max_size=3), st.text(max_size=3))
VALUES = st.one_of(PROMPTS, TOKENS, NUMBERS, LAYERS, st.booleans(),
                   st.tuples(st.integers(-3, 5), st.integers(-3, 5)),
                   st.sampled_from(["resid_pre", "head_out", "attn_pattern", "bogus", "all",
                                    "last", "induction", "self", "logit", "pairs", "any"]))


CLEAN, CORRUPTED = "The cat sat on the", "The dog sat on the"
VALID = {  # one valid call per marker; examples change 0-3 of its arguments
    "lens": (("The cat sat on the", " mat"), dict(layer=-1, top_k=5)),
    "logit_diff": ((CLEAN,), dict(answer=" mat", foil=" rug", min=-100)),
    "activation_patching": ((CLEAN, CORRUPTED), dict(answer=" mat", foil=" rug", layer=1,
                                                     position=1, min_recovery=-10)),
    "patchscope": (("The cat sat", " cat"), dict(layer=[0, 1], expect="x", mode="any",
                                                 max_new_tokens=2)),
    "steering": ((CLEAN,), dict(positive="I love", negative="I hate", layer=1, coef=[0, 2],
                                target=" mat", max_delta=100)),
    "attention": ((), dict(kind="self", head=(0, 1), max_score=1)),
}


@st.composite
def marker_calls(draw):
    import inspect

    marker = draw(st.sampled_from(EXPECTATION_MARKERS))
    args, kwargs = VALID[marker.name]
    args, kwargs = list(args), dict(kwargs)
    names = [p.name for p in inspect.signature(marker.signature).parameters.values()]
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from([*names, "unknown_keyword"]))
        value = draw(PROMPTS if name in ("prompt", "clean", "corrupted", "source", "positive",
                                         "negative") else
                     TOKENS if name in ("target", "answer", "foil", "token", "expect") else
                     VALUES)
        index = names.index(name) if name in names else None
        if index is not None and index < len(args):
            args[index] = value
        elif draw(st.integers(0, 5)) or name != "unknown_keyword":
            kwargs[name] = value
    return marker, tuple(args), kwargs


@pytest.fixture(scope="module")
def tiny(load_backend):
    return InterpModel(load_backend("tiny-random-llama"), memory_bytes=64 * 1024**2)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=marker_calls())
def test_random_marker_arguments_never_crash(tiny, call):
    marker, args, kwargs = call
    try:
        expectation = parse_expectation(marker, args, kwargs, Path("/nonexistent-root"))
        expectation.validate(tiny)
        outcome = expectation.check(tiny)
    except InterpError as exc:
        event("one-line error")
        message = str(exc)
        assert message and "Traceback" not in message
        assert len(message.splitlines()) == 1 or "tokenize to the same length" in message
        return
    event("checked: " + ("pass" if outcome is None else "fail"))
    assert outcome is None or (isinstance(outcome, str) and outcome)
