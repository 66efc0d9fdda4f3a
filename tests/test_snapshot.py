"""Snapshots: tolerant comparison in model terms, and the syrupy flow through pytester."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_interp.results import AttentionResult, LensResult, Vocab, attention_labels
from pytest_interp.snapshot import (
    SnapshotFormatError,
    Tolerances,
    compare,
    parse,
    render,
    summarize,
    with_tolerance,
)

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

VOCAB = Vocab.from_strings([" Paris", " London", " Rome", " the"])


def _lens(logits_last: list[float]) -> LensResult:
    logits = np.array([[[0.0, 0.0, 0.0, 5.0]], [logits_last]])
    return LensResult(model="m", lens="logit", prompt="The capital of France is",
                      str_tokens=("The", " capital", " of", " France", " is"), positions=(4,),
                      logits=logits, final_logits=logits[-1], vocab=VOCAB)


def _attention(induction: float) -> AttentionResult:
    scores = {k: np.full((2, 2), 0.1) for k in ("previous_token", "first_token", "self",
                                                "entropy")}
    scores["induction"] = np.array([[0.0, 0.0], [0.0, induction]])
    return AttentionResult(model="m", prompt=None, str_tokens=("a",), scores=scores,
                           labels=attention_labels(scores), patterns=np.zeros((2, 2, 1, 1)))


def _texts(old, new, tol=None, noise=False) -> list[str]:
    """The changes (or, with ``noise``, the near-ties) from ``old`` to ``new``."""
    tol = tol or Tolerances()
    return [c.text for c in compare(parse(render(old)), parse(render(new)), tol)
            if c.noise == noise]


def test_lens_changes_in_model_terms():
    base = _lens([3.0, 2.0, 0.0, 0.0])
    assert _texts(base, _lens([3.001, 2.0, 0.0, 0.0])) == []  # float noise
    assert _texts(base, _lens([2.0, 3.0, 0.0, 0.0])) == [
        "layer 1 pos -1 (' is'): top-1 ' Paris' (0.68) -> ' London' (0.68)",
        "layer 1 pos -1 (' is'): P(' Paris') 0.68 -> 0.25",
        "layer 1 pos -1 (' is'): P(' London') 0.25 -> 0.68",
    ]
    tied, swapped = _lens([3.0, 3.0, 0.0, 0.0]), _lens([3.0, 3.0 + 1e-6, 0.0, 0.0])
    assert _texts(tied, swapped) == []
    assert _texts(tied, swapped, noise=True) == [
        "layer 1 pos -1 (' is'): top-1 ' Paris' (0.48) -> ' London' (0.48), a near-tie "
        "(within 0.02)"]
    # two tokens whose probabilities moved by 0.01 and swapped: noise at prob 0.02, not at 0.005
    near, flipped = _lens([3.0, 2.96, 0.0, 0.0]), _lens([2.98, 3.0, 0.0, 0.0])
    assert _texts(near, flipped) == []
    assert _texts(near, flipped, Tolerances(prob=0.005))[0] == (
        "layer 1 pos -1 (' is'): top-1 ' Paris' (0.49) -> ' London' (0.48)")


def test_attention_change_names_the_head_and_label():
    assert _texts(_attention(0.82), _attention(0.11)) == [
        "L1H1: induction 0.82 -> 0.11 (label induction -> mixed)"]
    assert _texts(_attention(0.41), _attention(0.395)) == []  # a label flip within tolerance
    assert _texts(_attention(0.82), _attention(0.7), with_tolerance(prob=0.2).tolerances) == []


def test_a_different_measurement_and_unreadable_snapshots():
    other = LensResult(**{**_lens([3, 2, 0, 0]).__dict__, "prompt": "Another prompt"})
    assert _texts(_lens([3, 2, 0, 0]), other) == [
        "a different measurement: prompt 'The capital of France is' -> 'Another prompt'"]
    with pytest.raises(SnapshotFormatError) as err:
        parse(render(_lens([3, 2, 0, 0])).replace('"top"', "top", 1))
    assert str(err.value) == ("line 3: not JSON (Expecting property name enclosed in double "
                              "quotes)")
    with pytest.raises(TypeError):
        with_tolerance(probability=0.1)
    assert summarize(_attention(0.5))[1][3]["label"] == "induction"


SUITE = """
    import pytest

    def test_attention(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.attention()

    def test_lens(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.logit_lens("The cat sat on the", positions=None)

    def test_generation(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.generate("The cat sat", max_new_tokens=5)
"""


def _perturbed_copy(load_raw_hf, path, layer: int, head: int) -> None:
    """tiny-random-llama saved to ``path`` with one head's queries and keys made sharp."""
    raw = load_raw_hf("tiny-random-llama")
    state = {k: v.clone() for k, v in raw.model.state_dict().items()}
    d_head = raw.model.config.hidden_size // raw.model.config.num_attention_heads
    rows = slice(head * d_head, (head + 1) * d_head)
    attn = f"model.layers.{layer}.self_attn"
    state[f"{attn}.q_proj.weight"][rows] *= 2000  # a sharp pattern, for this head only
    raw.model.save_pretrained(path, state_dict=state)
    raw.tokenizer.save_pretrained(path)


@pytest.mark.slow
def test_snapshot_flow_on_tiny_llama(pytester, load_raw_hf, tmp_path):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=3)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    first = stored.read_bytes()
    assert first.decode().count("pytest-interp snapshot v1") == 2  # generation is plain amber
    pytester.runpytest().assert_outcomes(passed=3)
    pytester.runpytest("--interp-backend", "nnsight").assert_outcomes(passed=3)
    assert stored.read_bytes() == first

    _perturbed_copy(load_raw_hf, tmp_path / "perturbed", layer=1, head=2)
    result = pytester.runpytest("--interp-model", str(tmp_path / "perturbed"))
    result.assert_outcomes(failed=3)  # one head changed: so did everything downstream of it
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "attention of perturbed changed" in line)
    assert lines[start].endswith("changed beyond the noise floor (tolerances prob 0.02, logit "
                                 "0.1, recovery 0.05), 4 changes, largest first:")
    assert lines[start + 1].strip().startswith(
        "E           (the weights changed (tiny-random-llama-seed0-v1 -> sha256:")
    assert lines[start + 2].strip() == "E           L1H2: entropy 2.70 -> 0.00"
    assert all("L1H2" in line for line in lines[start + 2:start + 6])  # the head, first
    assert stored.read_bytes() == first  # a failure never rewrites the file
    pytester.runpytest("--interp-model", str(tmp_path / "perturbed"),
                       "--snapshot-update").assert_outcomes(passed=3)
    pytester.runpytest("--interp-model", str(tmp_path / "perturbed")).assert_outcomes(passed=3)
    assert stored.read_bytes() != first


def test_corrupt_snapshot_is_named(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=3)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    text = stored.read_text()
    stored.write_text(text.replace('"label": "mixed"}', '"label": mixed}', 1))
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=2)
    bad = next(i for i, line in enumerate(stored.read_text().splitlines(), 1)
               if '"label": mixed}' in line)
    result.stdout.fnmatch_lines([
        f"*the stored snapshot cannot be read: __snapshots__/test_m.interp:{bad} (snapshot "
        "test_*): not JSON (Expecting value); fix it by hand or re-create it with "
        "--snapshot-update",
    ])
    assert "Traceback" not in result.stdout.str()


@pytest.mark.parametrize("damage, line, problem", [
    ("not utf-8", "last", "not UTF-8 text (byte 0xff)"),
    ("truncated", "name", "snapshot test_lens has no closing '# ---' line (is the file "
                          "truncated?)"),
    ("emptied", 1, "does not start with '# serializer version: 1' (found '')"),
])
@pytest.mark.slow
def test_damaged_snapshot_file_names_file_and_line_and_is_kept(pytester, damage, line, problem):
    """A file syrupy cannot read fails the test with the place and the fix; nothing is
    rewritten until --snapshot-update re-creates it."""
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=3)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    text = stored.read_bytes()
    lines = text.decode().splitlines()
    if damage == "not utf-8":
        damaged, line = text + b"\xff\n", len(lines) + 1
    elif damage == "truncated":
        line = lines.index("# name: test_lens") + 1
        damaged = "\n".join(lines[:line + 2]).encode()
    else:
        damaged = b""
    stored.write_bytes(damaged)
    result = pytester.runpytest()
    assert result.parseoutcomes().get("failed", 0) >= 1
    result.stdout.fnmatch_lines([
        f"E * the stored snapshot cannot be read: __snapshots__/test_m.interp:{line}: {problem}; "
        "fix it by hand or re-create it with --snapshot-update"])
    assert "Error" not in result.stdout.str().replace("AssertionError", "")
    assert stored.read_bytes() == damaged
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=3)
    pytester.runpytest().assert_outcomes(passed=3)
    assert stored.read_bytes() == text
    if damage == "not utf-8":  # moved aside, not lost
        assert (pytester.path / "test_m.interp.unreadable").read_bytes() == damaged


@pytest.mark.slow
def test_smollm2_snapshot_suite_is_byte_identical_across_runs(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        def test_all(interp_model, interp_snapshot):
            fact = "The capital of France is"
            assert interp_snapshot(name="lens") == interp_model.logit_lens(fact)
            assert interp_snapshot(name="attention") == interp_model.attention()
            assert interp_snapshot(name="patchscope") == interp_model.patchscope(
                "Amazon's former CEO attended Oscars", " CEO", layer=[0, 1, 15], expected="CEO")
            v = interp_model.steering_vector("I love this", "I hate this", layer=16)
            assert interp_snapshot(name="steering") == interp_model.steer(
                "I think this movie is", v, layer=16, coef=[0, 2], positions=1,
                target=" great", foil=" terrible", max_new_tokens=6)
            assert interp_snapshot(name="patching") == interp_model.activation_patching(
                "When Mary and John went to the store, John gave a drink to",
                "When Mary and John went to the store, Mary gave a drink to",
                answer=" Mary", foil=" John", site="attn_out", layers=[0, 14, 29])
            assert interp_snapshot(name="generation") == interp_model.generate(fact)
    """)
    # Floors calibrated under one perturbation: the floors' bytes come from the same code
    # whichever perturbations measure them (each more loads SmolLM2 again and re-runs all six).
    floors = "--interp-noise-floor=noise:1e-3"
    pytester.runpytest("--snapshot-update", floors).assert_outcomes(passed=1)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    first = stored.read_bytes()
    stored.unlink()
    pytester.runpytest("--snapshot-update", floors).assert_outcomes(passed=1)
    assert stored.read_bytes() == first
    assert "layer 29" not in first.decode()
    assert '"text": "CEO;\\n\\n' in first.decode()


@pytest.mark.slow
def test_snapshots_under_xdist_are_neither_lost_nor_duplicated(pytester):
    ini(pytester, model="tiny-random-llama")
    tests = "\n".join(f"""
def test_lens_{i}(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.logit_lens("The cat sat on mat {i}")
""" for i in range(6))
    pytester.makepyfile(test_m=tests)
    pytester.runpytest("-n", "2", "--snapshot-update").assert_outcomes(passed=6)
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    text = stored.read_text()
    assert sorted(line for line in text.splitlines() if line.startswith("# name:")) == [
        f"# name: test_lens_{i}" for i in range(6)]
    result = pytester.runpytest("-n", "2")
    result.assert_outcomes(passed=6)
    assert "unused" not in result.stdout.str()
    serial = pytester.runpytest("-p", "no:xdist")
    serial.assert_outcomes(passed=6)
    serial.stdout.fnmatch_lines(["6 snapshots passed."])
    assert stored.read_text() == text
    pytester.makepyfile(test_m=tests.split("\ndef test_lens_5")[0])  # test_lens_5 removed
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["5 snapshots passed. 1 snapshot unused."])
    pytester.runpytest("--snapshot-update").stdout.fnmatch_lines(["*1 unused snapshot deleted*"])
    assert "test_lens_5" not in stored.read_text()


def _pair(cls, **changes):
    """A hand-built result of ``cls`` and a copy with ``changes``."""
    from pytest_interp.results import PatchingResult, PatchscopeResult, SteeringResult

    base = {
        PatchingResult: dict(
            model="m", site="resid_pre", clean="a b", corrupted="a c", answer=" x", foil=" y",
            clean_tokens=("a", " b"), corrupted_tokens=("a", " c"), clean_logit_diff=2.0,
            corrupted_logit_diff=-2.0, patched=np.array([[-2.0, 1.0], [-2.0, 2.0]])),
        PatchscopeResult: dict(
            model="m", source="a b", source_tokens=("a", " b"), source_position=1,
            target="t ?", target_tokens=("t", " ?"), target_position=1, pairs=((0, 0), (1, 1)),
            continuations=("b;", "x"), token_ids=((1,), (2,)), expected="b",
            expected_prob=(0.5, 0.1)),
        SteeringResult: dict(
            model="m", prompt="p", layer=1, site="resid_pre", positions="all",
            vector_norm=3.0, coefs=(0.0, 2.0), target=" x", foil=" y", baseline=1.0,
            values=np.array([1.0, 3.0]), kl=np.array([0.0, 0.5]),
            baseline_top=((" x", 0.5),), steered_top=(((" x", 0.5),), ((" x", 0.7),)),
            baseline_text="t", texts=("t", "u")),
    }[cls]
    return cls(**base), cls(**(base | changes))


def test_patching_patchscope_and_steering_changes():
    from pytest_interp.results import PatchingResult, PatchscopeResult, SteeringResult

    old, new = _pair(PatchingResult, patched=np.array([[-2.0, 1.0], [-2.0, 0.0]]),
                     clean_logit_diff=2.05)
    assert _texts(old, new) == ["resid_pre L1 pos 1 (' b'): recovery 1.00 -> 0.49"]
    old, new = _pair(PatchscopeResult, continuations=("b;", "y"), expected_prob=(0.4, 0.1))
    assert _texts(old, new) == ["layers 1->1: 'x' -> 'y'", "layers 0->0: P('b') 0.50 -> 0.40"]
    old, new = _pair(SteeringResult, values=np.array([1.0, 2.5]), texts=("t", "v"),
                     kl=np.array([0.0, 0.55]))
    assert _texts(old, new) == ["coef 2: generation 'u' -> 'v'", "coef 2: value 3.00 -> 2.50"]


def test_snapshot_details_lists_every_change(pytester, load_raw_hf, tmp_path):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_attention(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.attention()
    """)
    pytester.makeconftest("""
        import pytest
        from pytest_interp.snapshot import InterpSnapshotExtension

        @pytest.fixture(autouse=True)
        def show_two():
            InterpSnapshotExtension.shown = 2  # fewer than this perturbation's 3 changes
            yield
            InterpSnapshotExtension.shown = 10
    """)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    _perturbed_copy(load_raw_hf, tmp_path / "perturbed", layer=0, head=1)
    model = ("--interp-model", str(tmp_path / "perturbed"))
    short = pytester.runpytest(*model).stdout.str()
    full = pytester.runpytest(*model, "--snapshot-details").stdout.str()
    assert "... 1 more (--snapshot-details shows all; --snapshot-update accepts them)" in short
    assert "more (--snapshot-details" not in full
    assert full.count("-> ") > short.count("-> ")
