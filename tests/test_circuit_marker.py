"""The circuit marker through pytest: passes, exact failure texts, datasets, controls, drift
against --interp-baseline, snapshots, bad arguments (at collection, or when the test runs);
the codec's tie-aware comparison and the figure on hand-built results."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_interp.codec import Tolerances
from pytest_interp.kinds.circuit import CircuitCodec, CircuitExpectation, circuit_figure
from pytest_interp.model import InterpModel
from pytest_interp.results.circuit import CircuitResult, EdgeScores, drift

from .pytester_helpers import assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

IOI = "When Mary and John went to the store, John gave a drink to"
ABC = "When Mary and John went to the store, Anna gave a drink to"
ARGS = f"{IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', min_effect=0"


@pytest.fixture(scope="module")
def llama(load_backend):
    return InterpModel(load_backend("tiny-random-llama"))


def test_the_marker_passes_and_fails_naming_edges_nodes_and_faithfulness(pytester, llama):
    found = CircuitExpectation(IOI, corrupted=ABC, answer=" Mary", foil=" John", top_n=5,
                               min_faithfulness=0.0, min_effect=0).run(llama)
    top, value = found.circuit.edges[0], found.value
    outside = found.scores.top(40).edges[-1]
    rank, score = found.scores.rank(outside), found.scores.score(outside)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.circuit({ARGS}, top_n=5, min_faithfulness={value - 0.01},
                             edges=[{top!r}], nodes=[{found.circuit.nodes[0]!r}])
        def test_pass():
            pass

        @pytest.mark.circuit({ARGS}, top_n=5, edges=[{outside!r}, "L0H0->L9H9.q"],
                             nodes=["L2H3"])
        def test_members():
            pass

        @pytest.mark.circuit({ARGS}, top_n=5, min_faithfulness={value + 0.5})
        def test_faithful():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(passed=1, failed=2)
    nodes = found.circuit.nodes
    missing_node = [] if "L2H3" in nodes else ["node L2H3 is not in the top-5 circuit"]
    out.stdout.fnmatch_lines([
        f"circuit: the top-5 EAP circuit on {IOI!r}: edge {outside} is not in the top 5 (rank "
        f"{rank}, score {score:+.4f}); edge L0H0->L9H9.q is not in the top 5 (not an edge of "
        f"this model){''.join('; ' + m for m in missing_node)}",
        f"  {top:<24} {found.circuit.scores[0]:+.4f}",
    ])
    out.stdout.fnmatch_lines([
        f"circuit: the top-5 EAP circuit on {IOI!r}: it recovers {value:.1%} of the "
        f"clean-vs-corrupted gap, below min_faithfulness={value + 0.5:g}",
        f"  faithfulness {value:.1%} * over 1 rows (patch); {len(nodes)} nodes",
    ])


def test_random_circuits_control_the_claim(pytester, llama):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.circuit({ARGS}, top_n=3, control=8, percentile=100)
        def test_controls():
            pass
    """)
    found = CircuitExpectation(IOI, corrupted=ABC, answer=" Mary", foil=" John", top_n=3,
                               control=8, percentile=100, min_effect=0).run(llama)
    out = pytester.runpytest()
    beats = (found.control_values < found.value).mean() + \
        0.5 * (found.control_values == found.value).mean()
    if beats == 1.0:
        out.assert_outcomes(passed=1)
    else:
        out.assert_outcomes(failed=1)
        out.stdout.fnmatch_lines([f"circuit: the top-3 EAP circuit on {IOI!r}: it recovers "
                                  f"{found.value:.1%}, which beats {beats:.0%} of 8 random "
                                  "circuits of 3 edges, expected 100%: their 100th percentile "
                                  "is *"])


def test_no_behaviour_to_carry_is_inconclusive(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.circuit({IOI!r}, corrupted={ABC!r}, answer=" Mary", foil=" John",
                             min_faithfulness=0.5)
        def test_x():
            pass
    """)
    out = pytester.runpytest()
    assert out.ret == pytest.ExitCode.TESTS_FAILED
    out.stdout.fnmatch_lines(["*= INCONCLUSIVE =*",
                              f"circuit: no behaviour to carry: the logit diff on {IOI!r} "
                              "differs by * between clean and corrupted, below min_effect=1: "
                              "faithfulness would divide by it; pick prompts whose corruption "
                              "changes the answer, or lower min_effect=",
                              "*= 1 inconclusive in *"])


def test_a_dataset_finds_one_circuit_on_all_rows(pytester, llama):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.circuit(prompts="ioi:6", top_n=10, min_faithfulness=-100, min_effect=0,
                             nodes=["L9H9"])
        def test_x():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(failed=1)
    out.stdout.fnmatch_lines(["circuit over ioi:6: circuit: the top-10 EAP circuit on 6 "
                              "prompts: node L9H9 is not in the top-10 circuit"])


@pytest.mark.parametrize(("marker", "message"), [
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John')",
     "no claim given: pass min_faithfulness=, edges=[...], nodes=[...], control=N and/or "
     "min_jaccard="),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', edges=['L1H2'])",
     "edge 'L1H2' is not written writer->reader (e.g. 'L5H1->L9H6.q', 'L9.mlp->logits')"),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', nodes='L1H2')",
     "nodes must be a list of names (e.g. nodes=['L9H6']), got 'L1H2'"),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', method='acdc', "
     "control=2)", "method must be one of eap, eap-ig, got 'acdc'"),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', steps=0, "
     "control=2)", "steps must be >= 1, got 0"),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', control=2)",
     "metric='logit_diff' needs foil=: pass a foil token, or another metric (logprob, prob, "
     "rank, kl)"),
    (f"circuit({IOI!r}, corrupted={ABC!r}, answer=' Mary', foil=' John', ablation='zero', "
     "control=2)", "ablation must be one of patch, mean, got 'zero'"),
])
def test_bad_arguments_fail_at_collection(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


def test_prompts_of_different_lengths_fail_when_run(pytester):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(
        pytester, f"circuit({IOI!r}, corrupted='When Mary went', answer=' Mary', foil=' John', "
                  "control=2)",
        "clean and corrupted prompts must tokenize to the same length, got 14 and 3: reword "
        "one so positions line up")


def test_against_a_baseline_the_drift_is_charted_and_bounded(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.circuit({ARGS}, top_n=10, min_jaccard=0.5)
        def test_x():
            pass
    """)
    out = pytester.runpytest("--interp-baseline=tiny-random-mistral",
                             "--interp-report=report.html")
    out.assert_outcomes(failed=1)
    out.stdout.fnmatch_lines([
        "circuit: the top-10 circuit drifted from tiny-random-mistral's: Jaccard *, below "
        "min_jaccard=0.5",
        "  vs tiny-random-mistral: Jaccard * of the top 10, rank correlation *, the "
        "baseline's circuit recovers *; nodes entered *, left *"])
    page = (pytester.path / "report.html").read_text()
    assert "vs tiny-random-mistral: Jaccard" in page
    assert "circuit: top 10 edges (EAP)" in page


def _result(edges: dict[str, float], faithful: float | None = None,
            model: str = "m") -> CircuitResult:
    names = tuple(edges)
    scores = EdgeScores(model, "eap", 1, "logit diff", names, np.array(list(edges.values())),
                        1, 2.0, 0.0)
    return CircuitResult(scores, 3, ("p",), None)


def _compare(old: CircuitResult, new: CircuitResult):
    codec = CircuitCodec()
    (meta_a, rows_a), (meta_b, rows_b) = codec.summarize(old), codec.summarize(new)
    return codec.compare_rows(meta_a, meta_b, rows_a, rows_b, Tolerances())


def test_the_codec_is_tie_aware_at_the_nth_edge():
    old = _result({"a->logits": 1.0, "b->logits": 0.5, "c->logits": 0.30, "d->logits": 0.29})
    swapped = _result({"a->logits": 1.0, "b->logits": 0.5, "c->logits": 0.29,
                       "d->logits": 0.30})
    changes = _compare(old, swapped)
    assert all(c.noise for c in changes), changes
    texts = [c.text for c in changes]
    assert "edge c->logits (+0.300 of the strongest) left the top n, a near-tie at the cutoff " \
           "(within 0.02)" in texts
    assert "edge d->logits (+0.300 of the strongest) entered the top n, a near-tie at the " \
           "cutoff (within 0.02)" in texts
    assert "top-3 circuit: Jaccard 0.50 with the stored one; nodes entered ['d'], left ['c']" \
        in texts
    moved = _result({"a->logits": 1.0, "b->logits": 0.9, "d->logits": 0.6, "c->logits": 0.1})
    real = [c for c in _compare(old, moved) if not c.noise]
    # c left because d rose past it (d's change), not because c fell: c's leaving is a tie
    assert [c.text for c in real] == [
        "edge b->logits: score +0.500 -> +0.900 of the strongest",
        "edge d->logits (+0.600 of the strongest) entered the top n"]
    assert all(c.size > 1 for c in real)


def test_drift_and_figure_name_what_entered_and_left():
    old = _result({"a->logits": 1.0, "b->L1H0.q": 0.5, "c->logits": 0.3, "d->logits": 0.1},
                  model="old")
    new = _result({"a->logits": 1.0, "b->L1H0.q": 0.4, "c->logits": 0.1, "d->logits": 0.6},
                  model="new")
    found = drift(new, old, 0.5)
    assert (found.jaccard, found.entered, found.left) == (0.5, ("d",), ("c",))
    assert found.rank_correlation == pytest.approx(0.4)
    from dataclasses import replace

    page = circuit_figure(replace(new, drift=found))
    assert "vs old: Jaccard 0.50" in page
    assert page.count("<line") == 4  # three edges, and the one that left (dashed)
    assert "stroke='#2a2'" in page and "stroke-dasharray" in page
