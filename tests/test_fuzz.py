"""Random marker arguments: each is a clean pass/fail or one InterpError line, never a crash."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from pytest_interp.dataset_expectation import parse_marker
from pytest_interp.errors import InterpError
from pytest_interp.model import InterpModel
from pytest_interp.registry import KINDS

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


@st.composite
def marker_calls(draw):
    kind = draw(st.sampled_from([k for k in KINDS if k.example is not None]))
    args, kwargs = kind.example  # one valid call per kind; examples change 0-3 arguments
    args, kwargs = list(args), dict(kwargs)
    names = list(kind.marker.parameters)
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
    return kind, tuple(args), kwargs


@pytest.fixture(scope="module")
def tiny(load_backend):
    return InterpModel(load_backend("tiny-random-llama"), memory_bytes=64 * 1024**2)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(call=marker_calls())
def test_random_marker_arguments_never_crash(tiny, call):
    kind, args, kwargs = call
    try:
        expectation = parse_marker(kind, args, kwargs, Path("/nonexistent-root"))
        _, outcome = kind.check(tiny, expectation)
    except InterpError as exc:
        event("one-line error")
        message = str(exc)
        assert message and "Traceback" not in message
        assert len(message.splitlines()) == 1 or "tokenize to the same length" in message
        return
    event("checked: " + ("pass" if outcome is None else "fail"))
    assert outcome is None or (isinstance(outcome, str) and outcome)


# ---------------------------------------------------------------------------
# Corrupt and hand-edited snapshots: a model-terms diff or one "cannot be read" line naming
# the file and line, never a crash.

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(),
              st.text(max_size=8), st.sampled_from(["L0H0", "0->0", " Paris", "mixed"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def stored_results(tiny):
    """One real result of each snapshot kind, and its rendered text."""
    from pytest_interp.snapshot import render

    vector = tiny.steering_vector("I love", "I hate", layer=1)
    results = [
        tiny.logit_lens(CLEAN, positions=[-2, -1]),
        tiny.activation_patching(CLEAN, CORRUPTED, answer=" mat", foil=" rug"),
        tiny.activation_patching(CLEAN, CORRUPTED, answer=" mat", foil=" rug", site="head_out",
                                 per_position=False),
        tiny.patchscope("The cat sat", " cat", layer=[0, 1], expected="cat",
                        max_new_tokens=2),
        tiny.steer(CLEAN, vector, layer=1, coef=[0, 2], target=" mat", foil=" rug",
                   max_new_tokens=2),
        tiny.attention(),
    ]
    return [(result, render(result)) for result in results]


def _edit_value(draw, obj, value):
    """Replace one value (at any depth) or delete/add one key of ``obj``, in place."""
    if isinstance(obj, dict) and obj:
        key = draw(st.sampled_from(sorted(obj)))
        action = draw(st.sampled_from(["replace", "delete", "descend", "add"]))
        if action == "delete":
            del obj[key]
        elif action == "add":
            obj[draw(st.text(max_size=6))] = value
        elif action == "descend" and isinstance(obj[key], dict | list) and obj[key]:
            _edit_value(draw, obj[key], value)
        else:
            obj[key] = value
    elif isinstance(obj, list) and obj:
        index = draw(st.integers(0, len(obj) - 1))
        if isinstance(obj[index], dict | list) and obj[index] and draw(st.booleans()):
            _edit_value(draw, obj[index], value)
        elif draw(st.booleans()):
            del obj[index]
        else:
            obj[index] = value


@st.composite
def corruptions(draw, texts):
    import json

    text = draw(st.sampled_from(texts))
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["json", "json", "json", "delete", "duplicate", "swap",
                                    "truncate", "insert", "header"]))
        index = draw(st.integers(0, len(lines) - 1))
        if how == "json" and lines[index].startswith("{"):
            try:
                obj = json.loads(lines[index])
            except json.JSONDecodeError:
                continue  # an earlier edit broke this line
            _edit_value(draw, obj, draw(JSON_VALUES))
            lines[index] = json.dumps(obj, ensure_ascii=False)
        elif how == "delete" and len(lines) > 1:
            del lines[index]
        elif how == "duplicate":
            lines.insert(index, lines[index])
        elif how == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[index], lines[other] = lines[other], lines[index]
        elif how == "truncate":
            lines[index] = lines[index][: draw(st.integers(0, len(lines[index])))]
        elif how == "insert":
            at = draw(st.integers(0, len(lines[index])))
            lines[index] = lines[index][:at] + draw(st.text(max_size=3)) + lines[index][at:]
        elif how == "header":
            lines[0] = draw(st.sampled_from(["", "pytest-interp snapshot v2: lens of m",
                                             lines[0] + " extra"]))
    return text, "\n".join(lines)


@settings(max_examples=600, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_corrupt_snapshots_give_a_diff_or_one_line_naming_the_line(stored_results, data):
    from pytest_interp.record import recording
    from pytest_interp.snapshot import InterpSnapshotExtension

    fresh, stored = data.draw(corruptions([text for _, text in stored_results]))
    extension = InterpSnapshotExtension()
    with recording():
        if extension.matches(serialized_data=fresh, snapshot_data=stored):
            event("still matches")
            return
        lines = list(extension.diff_lines(fresh, stored))
    assert lines and all(isinstance(line, str) and "\n" not in line for line in lines)
    if "cannot be read" in lines[1]:
        event("cannot be read")
        assert lines[1].startswith("  the stored snapshot cannot be read: line ")
        assert lines[1].endswith("; fix it by hand or re-create it with --snapshot-update")
    elif "a different measurement" in lines[1]:
        event("a different measurement")
    else:
        event("model-terms diff")
