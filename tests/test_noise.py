"""Snapshots that know their own noise: near-tie texts, noise floors, provenance, narrowing,
and the generation kind (hand-built results, and the plugin surface on the tiny model)."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_interp.codec import Tolerances, measure_floors
from pytest_interp.kinds.generation import GenerationExpectation
from pytest_interp.kinds.lens import LensCodec
from pytest_interp.results import GenerationResult, LensResult, Vocab
from pytest_interp.snapshot import InterpSnapshotExtension, compare, parse, render, summarize

from .pytester_helpers import assert_collection_error, ini

pytest_plugins = ["pytester"]

VOCAB = Vocab.from_strings([" Paris", " London", " the", " a", "."])


def _generation(tokens: list[str], margins: list[float]) -> GenerationResult:
    return GenerationResult("m", "The capital of France is", "".join(tokens), tuple(tokens),
                            tuple(margins))


def _lens(logits: list[list[float]], target: str | None = None) -> LensResult:
    arr = np.array(logits, dtype=np.float32)[:, None, :]
    result = LensResult(model="m", lens="logit", prompt="Capital is",
                        str_tokens=("Capital", " is"), positions=(1,), logits=arr,
                        final_logits=arr[-1], vocab=VOCAB)
    return result.focus(target) if target else result


def _changes(old, new, tol=None, provenance=(None, None)):
    return compare(parse(render(old, provenance=provenance[0])),
                   parse(render(new, provenance=provenance[1])), tol or Tolerances())


def test_a_text_parting_at_a_near_tie_is_noise_and_the_rest_is_not_compared():
    stored = _generation([" Paris", ".", " It"], [3.0, 0.05, 1.0])
    tie = _changes(stored, _generation([" Paris", ",", " and"], [3.0, 0.06, 4.0]))
    assert [(c.noise, c.text) for c in tie] == [(True, (
        "generation ' Paris. It' -> ' Paris, and', parted at step 1 where the top two were "
        "0.050 apart (a near-tie, below 0.1)"))]
    sure = _changes(stored, _generation([" London", ".", " It"], [2.0, 0.05, 1.0]))
    assert [(c.noise, c.text) for c in sure] == [(False, "generation ' Paris. It' -> "
                                                         "' London. It'")]
    # the near-tie may be in the new run: a step the stored run was sure of, the new was not
    unsure = _changes(stored, _generation([" London", ".", " It"], [0.02, 0.05, 1.0]))
    assert [c.noise for c in unsure] == [True]


def test_a_changed_tokenizer_fails_first_and_alone():
    was = {"weights": "w1", "tokenizer": "t1", "backend": "transformer_lens"}
    now = {"weights": "w1", "tokenizer": "t2", "backend": "transformer_lens"}
    lens = _lens([[3.0, 2.0, 0, 0, 0]])
    changes = _changes(lens, _lens([[2.0, 3.0, 0, 0, 0]]), provenance=(was, now))
    assert [c.text for c in changes] == [
        "tokenization changed (tokenizer t1 -> t2): positions are not comparable; "
        "--snapshot-update records the new tokenization"]


def test_moved_numbers_with_unchanged_weights_are_the_environment():
    was = {"weights": "w1", "tokenizer": "t1", "backend": "transformer_lens", "torch": "2.13.0"}
    now = dict(was, torch="2.14.1")
    stored = render(_lens([[3.0, 2.0, 0, 0, 0]]), provenance=was)
    new = render(_lens([[2.0, 3.0, 0, 0, 0]]), provenance=now)
    lines = list(InterpSnapshotExtension().diff_lines(new, stored))
    assert lines[1] == ("  (the weights are unchanged (w1): the environment changed (torch "
                        "2.13.0 -> 2.14.1), not the model)")


def test_floors_are_k_times_the_widest_benign_deviation_and_are_used():
    codec = LensCodec()
    base = summarize(_lens([[3.0, 2.0, 0, 0, 0], [2.0, 1.0, 0, 0, 0]]))
    variant = summarize(_lens([[3.0, 2.0, 0, 0, 0], [2.0, 1.2, 0, 0, 0]]))
    meta_floor, rows = measure_floors(codec, base, [variant], Tolerances(), k=3)
    new = dict((t, p) for t, p in variant[1][1]["top"])
    moved = max(abs(p - new[t]) for t, p in base[1][1]["top"])  # the widest, over its tokens
    assert meta_floor == {} and rows[0] == {}  # layer 0 did not move: no floor stored
    assert rows[1] == {"top": pytest.approx(3 * moved, abs=1e-4)} and 3 * moved > 0.02
    stored = parse(render(_lens([[3.0, 2.0, 0, 0, 0], [2.0, 1.0, 0, 0, 0]]),
                          floors=(meta_floor, rows)))
    assert stored[1][1]["floor"] == rows[1]
    further = summarize(_lens([[3.0, 2.0, 0, 0, 0], [2.0, 1.35, 0, 0, 0]]))
    assert compare(stored, further, Tolerances()) == []  # within the floor (not 0.02)
    damage = summarize(_lens([[3.0, 2.0, 0, 0, 0], [2.0, 2.5, 0, 0, 0]]))
    first = next(c.text for c in compare(stored, damage, Tolerances()) if not c.noise)
    assert first.startswith("layer 1 pos -1 (' is'): top-1 ' Paris' (0.5") and \
        first.endswith("-> ' London' (0.54)")


def test_a_focused_lens_stores_and_compares_its_target_only():
    focused = _lens([[3.0, 2.0, 0, 0, 0], [1.0, 3.0, 0, 0, 0]], target=" Paris")
    meta, rows = parse(render(focused))
    assert meta["target"] == " Paris" and rows[1] == {
        "layer": 1, "position": 1, "rank": 1, "p": round(focused.prob(" Paris", 1), 4)}
    moved = _lens([[3.0, 2.0, 0, 0, 0], [3.0, 1.0, 0, 0, 0]], target=" Paris")
    assert [c.text for c in _changes(focused, moved)] == [
        f"layer 1 pos -1 (' is'): ' Paris' rank 1 -> 0, P {focused.prob(' Paris', 1):.2f} -> "
        f"{moved.prob(' Paris', 1):.2f}"]
    assert "a different measurement: target" in _changes(focused, _lens([[3.0, 2, 0, 0, 0],
                                                                          [1, 3, 0, 0, 0]]))[0].text


def test_the_generation_marker_checks_arguments_at_collection():
    with pytest.raises(Exception, match="no check given: pass contains=, not_contains= or regex="):
        GenerationExpectation("p")
    with pytest.raises(Exception, match=r"regex '\(' does not compile"):
        GenerationExpectation("p", regex="(")


@pytest.fixture
def tiny(pytester):
    ini(pytester, model="tiny-random-llama")
    return pytester


def test_the_generation_marker_failure_shows_the_text_and_its_margins(tiny):
    tiny.makepyfile(test_m="""
        import pytest

        @pytest.mark.generation("The cat sat", contains="zzz", max_new_tokens=3)
        def test_x():
            pass
    """)
    result = tiny.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "generation: the greedy continuation of 'The cat sat' is *, which contains none of 'zzz'",
        "  tokens with their margins (top-1 minus top-2 logit): * * *",
    ])


def test_narrowed_results_round_trip_through_snapshots(tiny):
    tiny.makepyfile(test_m="""
        def test_narrow(interp_model, interp_snapshot):
            lens = interp_model.logit_lens("The cat sat on the")
            assert interp_snapshot(name="target") == lens.focus(" mat")
            assert interp_snapshot(name="heads") == interp_model.attention().select([(0, 1)])
            scope = interp_model.patchscope("The cat sat", " cat", layer=[0, 1, 2],
                                            max_new_tokens=2)
            assert interp_snapshot(name="rows") == scope.select([1])
    """)
    tiny.runpytest("--snapshot-update").assert_outcomes(passed=1)
    stored = (tiny.path / "__snapshots__" / "test_m.interp").read_text()
    assert '"target": " mat"' in stored and '"heads": ["L0H1"]' in stored
    assert stored.count('"layers": "') == 1
    tiny.runpytest().assert_outcomes(passed=1)


@pytest.mark.parametrize(("args", "message"), [
    (["--interp-calibrate"], "*pytest-interp: --interp-calibrate rewrites snapshot files: add "
                             "--snapshot-update"),
    (["--interp-noise-floor=backend,fp8"], "*argument --interp-noise-floor: 'fp8' is not a "
                                           "perturbation: use backend, bfloat16, noise:R (R a "
                                           "relative size such as 1e-3), or none"),
])
def test_noise_floor_options_are_checked_at_start(pytester, args, message):
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_near_ties_pass_and_are_counted_in_the_summary(tiny):
    """A snapshot edited to claim another text that parted at a near-tie still passes."""
    tiny.makepyfile(test_m="""
        def test_text(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.generation("The cat sat", max_new_tokens=3)
    """)
    tiny.runpytest("--snapshot-update", "--interp-noise-floor=none").assert_outcomes(passed=1)
    path = tiny.path / "__snapshots__" / "test_m.interp"
    text = path.read_text()
    meta = parse(next(line.strip() for line in text.splitlines()
                      if line.strip().startswith("pytest-interp")) + "\n" +
                 next(line.strip() for line in text.splitlines() if '"steps"' in line))[0]
    first = meta["steps"][0]
    edited = text.replace(f'"text": "{meta["text"]}"', '"text": " elsewhere"').replace(
        f'[{first[0]!r}, {first[1]}]'.replace("'", '"'), '[" elsewhere", 0.01]')
    path.write_text(edited)
    result = tiny.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["interp: 1 snapshot passed with near-ties (noise, not "
                                 "failures); --snapshot-details lists them"])
    details = tiny.runpytest("--snapshot-details")
    details.stdout.fnmatch_lines(["  ~ test_m.py::test_text test_text: generation ' elsewhere' "
                                  "-> *, parted at step 0 where the top two were 0.010 apart "
                                  "(a near-tie, below 0.1)"])


def test_a_bad_generation_marker_is_a_collection_error(tiny):
    assert_collection_error(tiny, 'generation("The cat", max_new_tokens=3)',
                            "no check given: pass contains=, not_contains= or regex=")
