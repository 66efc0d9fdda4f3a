"""Datasets, statistics and verdicts without pytest: sources, generators, intervals, and
batched per-prompt values equal to single-prompt runs on every backend."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pytest_interp import dataset
from pytest_interp.datasets import capitals, ioi, load, role_position
from pytest_interp.errors import InterpError
from pytest_interp.model import InterpModel
from pytest_interp.stats import Verdict, estimate, verdict

from .conftest import BACKENDS

FIELDS = ("prompt", "answer", "foil")


# -- generators ----------------------------------------------------------------------------


def test_ioi_rows_are_seeded_balanced_and_differ_only_at_s2():
    rows = ioi(64, seed=3)
    assert rows == ioi(64, seed=3) and rows != ioi(64, seed=4)
    assert [r["order"] for r in rows].count("ABBA") == 32
    for r in rows:
        assert r["prompt"] == r["clean"] and r["answer"] == f" {r['io']}"
        assert r["foil"] == f" {r['s']}" and r["clean"].endswith(" to") is not None
        clean, corrupted = r["clean"].split(), r["corrupted"].split()
        diff = [i for i, (a, b) in enumerate(zip(clean, corrupted, strict=True)) if a != b]
        assert len(diff) == 1 and clean[diff[0]].strip(",.") == r["s"]  # S2 replaced
        assert r["clean"].count(r["io"]) == 1 and r["clean"].count(r["s"]) == 2


def test_ioi_pairs_tokenize_to_equal_lengths_and_roles_resolve(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))  # SmolLM2's tokenizer
    for r in ioi(256):
        clean, corrupted = model.tokens(r["clean"]), model.tokens(r["corrupted"])
        assert clean.length == corrupted.length, r
        strs = clean.strs[0]
        io, s1, s2 = (role_position(strs, r["roles"][k], k) for k in ("IO", "S1", "S2"))
        assert strs[io] == r["answer"] and strs[s1] == strs[s2] == r["foil"]
        assert s1 < s2 and role_position(strs, r["roles"]["END"], "END") == len(strs) - 1
        model.vocab.id(r["answer"])  # single tokens
    for r in capitals(111):
        model.vocab.id(r["target"])
        model.vocab.id(r["foil"])


def test_capitals_counts_and_limits():
    assert len(capitals()) == 37 and len(capitals(100)) == 100
    assert capitals(1)[0] == {"prompt": "The capital of France is", "target": " Paris",
                              "answer": " Paris", "expect": " Paris",
                              "foil": capitals(1)[0]["foil"], "country": "France"}
    with pytest.raises(InterpError, match=r"^n=112 is more than the 111 rows this generator "
                                          r"has$"):
        capitals(112)
    with pytest.raises(InterpError, match=r"^n must be a positive int, got 0$"):
        ioi(0)


# -- sources -------------------------------------------------------------------------------


def test_sources_lists_tuples_dicts_and_files(tmp_path):
    assert load(["a", ("b", " x"), {"prompt": "c", "note": 1}], tmp_path, FIELDS) == [
        {"prompt": "a"}, {"prompt": "b", "answer": " x"}, {"prompt": "c", "note": 1}]
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "p", "answer": " a"}) + "\n\n")
    (tmp_path / "d.csv").write_text("prompt,answer\np,q\n")
    (tmp_path / "d.txt").write_text("one\n\ntwo\n")
    assert load("d.jsonl", tmp_path, FIELDS) == [{"prompt": "p", "answer": " a"}]
    assert load("d.csv", tmp_path, FIELDS) == [{"prompt": "p", "answer": "q"}]
    assert load(str(tmp_path / "d.txt"), tmp_path, ("text",)) == [{"text": "one"},
                                                                   {"text": "two"}]
    assert load("ioi:3", tmp_path, FIELDS) == ioi(3)
    assert load("capitals", tmp_path, FIELDS) == capitals()


@pytest.mark.parametrize(("source", "message"), [
    ("iio:64", "prompts='iio:64' is no dataset generator or file: use ioi:N, capitals:N, or a "
               ".jsonl, .csv or .txt file"),
    ("ioi:x", "prompts='ioi:x': write ioi:N with N a number of rows"),
    ("d.tsv", "must be .jsonl, .csv or .txt"),
    ("gone.jsonl", "gone.jsonl' does not exist"),
    ("bad.jsonl", "bad.jsonl:2: not JSON (Expecting value)"),
    ("list.jsonl", "list.jsonl:1: a row must be a JSON object of arguments"),
    ([("a", "b", "c", "d")], "prompts row 0 has 4 values but a row can give at most (prompt, "
                             "answer, foil): use a dict"),
    ([3], "prompts row 0 is 3: give a string, a dict of arguments or a tuple (prompt, answer, "
          "foil)"),
    ([], "prompts= has no rows"),
    ({"prompt": "a"}, "prompts must be a list of prompts or rows, a .jsonl/.csv file or one of "
                      "'ioi:N', 'capitals:N', got {'prompt': 'a'}"),
])
def test_bad_sources_are_one_line(tmp_path, source, message):
    (tmp_path / "d.tsv").write_text("x")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\nnope\n')
    (tmp_path / "list.jsonl").write_text('["a"]\n')
    with pytest.raises(InterpError) as info:
        load(source, tmp_path, FIELDS)
    assert message in str(info.value) and "\n" not in str(info.value)


# -- statistics ----------------------------------------------------------------------------


def test_bootstrap_interval_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(0).normal(2.0, 1.0, 64)
    est = estimate(values, "mean", seed=1)
    assert est.value == pytest.approx(values.mean())
    assert est.low < est.value < est.high and est == estimate(values, "mean", seed=1)
    assert est.high - est.low == pytest.approx(2 * 1.96 * values.std() / 8, rel=0.15)
    bca = estimate(values, "mean", seed=1, interval="bca")
    assert bca.method.startswith("BCa") and bca.low < bca.value < bca.high
    median = estimate(values, "median", seed=1)
    assert median.value == pytest.approx(np.median(values))
    assert str(est).startswith(f"mean {est.value:.3f}, 95% CI [")


def test_fraction_interval_is_wilson_and_honest_at_the_ends():
    est = estimate([1.0] * 8 + [0.0] * 2, "fraction")
    assert (est.value, est.method) == (0.8, "Wilson")
    assert (round(est.low, 4), round(est.high, 4)) == (0.4902, 0.9433)
    ends = estimate([1.0] * 10, "fraction")
    assert ends.high == 1.0 and ends.low == pytest.approx(0.7225, abs=1e-4)  # not [1, 1]


def test_no_spread_and_bad_values():
    est = estimate([0.5, 0.5, 0.5], "mean")
    assert (est.low, est.high, est.method) == (0.5, 0.5, "no spread")
    with pytest.raises(InterpError, match=r"^row 1's value is nan: a statistic needs finite "
                                          r"values$"):
        estimate([1.0, math.nan], "mean")


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.0, None, Verdict.PASS), (1.5, None, Verdict.INCONCLUSIVE), (3.5, None, Verdict.FAIL),
    (None, 3.5, Verdict.PASS), (None, 1.5, Verdict.INCONCLUSIVE), (None, 0.5, Verdict.FAIL),
    (0.0, 3.5, Verdict.PASS), (1.5, 3.5, Verdict.INCONCLUSIVE), (2.5, 2.6, Verdict.INCONCLUSIVE),
])
def test_three_valued_verdict(low, high, expected):
    est = estimate([1.0, 2.0, 3.0], "mean", seed=0)  # interval about [1, 3]
    assert (est.low, est.high) == (1.0, 3.0)
    assert verdict(est, low, high) is expected


# -- batched rows equal single-prompt runs -------------------------------------------------


@pytest.fixture(params=[(s, b) for s in ("tiny-random-llama", "tiny-random-gpt2")
                        for b in BACKENDS], ids=lambda p: f"{p[0]}-{p[1]}")
def tiny(request, load_backend):
    spec, backend = request.param
    return InterpModel(load_backend(spec, backend))


ROWS = ioi(12, seed=5)


def test_logit_diff_rows_equal_single_runs(tiny):
    result = dataset(tiny, "logit_diff", ROWS, min=-1e9)
    singles = [tiny.logit_diff(r["prompt"], r["answer"], r["foil"]) for r in ROWS]
    np.testing.assert_allclose(result.values, singles, atol=1e-4)
    assert result.verdict is Verdict.PASS and result.estimate.n == 12


@pytest.mark.parametrize(("site", "where"), [
    ("resid_pre", {"layer": 1, "position": "S2"}), ("resid_pre", {"layer": 2, "position": "END"}),
    ("attn_out", {"layer": 1, "position": "S2"}), ("mlp_out", {"layer": 0, "position": -1}),
    ("head_out", {"layer": 1, "head": 2}), ("head_out", {"layer": 2, "head": 0, "position": "S2"}),
])
@pytest.mark.slow
def test_patching_cells_equal_the_restricted_sweep(tiny, site, where):
    # min_effect=0: a random model shows no effect to recover; this checks the numbers only
    result = dataset(tiny, "activation_patching", ROWS, site=site, **where,
                           min_recovery=-1e9, min_effect=0)
    for row, data, value in zip(result.results, ROWS, result.values, strict=True):
        pos = where.get("position")
        if isinstance(pos, str) and pos in data["roles"]:
            role = data["roles"][pos]
            pos = role_position(row.clean_tokens, role if isinstance(role, int) else
                                (role[0], role[1]), pos)
        single = tiny.activation_patching(
            data["clean"], data["corrupted"], answer=data["answer"], foil=data["foil"],
            site=site, per_position=site != "head_out" or pos is not None,
            layers=[where["layer"]], positions=None if pos is None else [pos])
        index = (where["layer"], *((where["head"],) if "head" in where else ()),
                 *(() if pos is None else (pos,)))
        assert row.patched.shape == single.patched.shape
        assert np.isnan(row.patched).sum() == row.patched.size - 1  # the one cell
        assert row.patched[index] == pytest.approx(single.patched[index], abs=1e-4)
        assert row.clean_logit_diff == pytest.approx(single.clean_logit_diff, abs=1e-4)
        assert value == pytest.approx(float(single.recovery[index]), abs=1e-3)


def test_next_token_perplexity_and_generation_rows_equal_single_runs(tiny):
    import torch

    prompts = [r["prompt"] for r in capitals(9)] + ["A", "The cat sat on the mat"]
    nxt = dataset(tiny, "next_token", [(p, " the") for p in prompts], top_k=1,
                        stat="fraction", min_fraction=0)
    ppl = dataset(tiny, "perplexity", prompts[:-2] + prompts[-1:], max=1e9)
    gen = dataset(tiny, "generation", prompts, not_contains="\x00", max_new_tokens=3,
                        stat="fraction", min_fraction=0)
    for p, n, g in zip(prompts, nxt.results, gen.results, strict=True):
        probs = torch.softmax(tiny.run(p).logits[0, -1].float(), -1)
        assert n.prob == pytest.approx(float(probs[tiny.vocab.id(" the")]), abs=1e-5)
        single = tiny.generation(p, max_new_tokens=3)
        assert g.text == single.text
        np.testing.assert_allclose(g.margins, single.margins, atol=1e-4)
    for p, r in zip(prompts[:-2] + prompts[-1:], ppl.results, strict=True):
        logits = tiny.run(p).logits[0].float()
        ids = tiny.tokens(p).tensor()[0]
        nll = -torch.log_softmax(logits, -1)[:-1].gather(-1, ids[1:, None])[:, 0]
        assert r.perplexity == pytest.approx(float(nll.mean().exp()), rel=1e-4)


def test_probes_refuse_a_list_in_one_line(tiny):
    with pytest.raises(InterpError) as info:
        tiny.logit_diff(["a", "b"], " x", " y")  # type: ignore[arg-type]
    assert str(info.value) == (
        "logit_diff takes one prompt string, got a list of 2: for a dataset use "
        "@pytest.mark.logit_diff(prompts=...) or pytest_interp.dataset(model, 'logit_diff', "
        "prompts, ...)")
    for call in (lambda: tiny.lens(["a"]), lambda: tiny.generation(("a",)),
                 lambda: tiny.activation_patching("a", ["b"], answer=" x", foil=" y"),
                 lambda: tiny.attention(["a"]), lambda: tiny.patchscope(["a"], 0, layer=0)):
        with pytest.raises(InterpError, match=r"takes one (prompt|clean|corrupted|source) "
                                              r"string, got a (list|tuple) of 1"):
            call()


def test_every_kind_takes_a_dataset(tiny):
    """Kinds with a per-prompt number give mean/median; every kind gives a fraction, each
    row judged by the kind's own single-prompt check."""
    prompts = [r["prompt"] for r in capitals(4)]
    lens = dataset(tiny, "lens", [(p, " the") for p in prompts], layer=-1, min_prob=1e-9)
    for p, value in zip(prompts, lens.values, strict=True):
        assert value == pytest.approx(tiny.logit_lens(p).prob(" the", layer=-1), abs=1e-6)
    heads = dataset(tiny, "attention", prompts, kind="previous_token", head=(1, 0),
                         max_score=1.0)
    for p, value in zip(prompts, heads.values, strict=True):
        assert value == pytest.approx(tiny.attention(p).score("previous_token", 1, 0))
    steer = dataset(tiny, "steering", prompts, layer=1, coef=2.0, target=" the",
                         positive="I love this", negative="I hate this", min_delta=-1e9)
    vector = tiny.steering_vector("I love this", "I hate this", layer=1)
    for p, value in zip(prompts, steer.values, strict=True):
        single = tiny.steer(p, vector, layer=1, coef=2.0, target=" the")
        assert value == pytest.approx(float(single.delta[0]), abs=1e-5)
    scope = dataset(tiny, "patchscope", [(p, -1, "zzz") for p in prompts], layer=0,
                         stat="fraction", min_fraction=0.0)
    assert scope.values == (0.0,) * 4 and scope.verdict is Verdict.PASS
    with pytest.raises(InterpError, match=r"^stat='mean' needs a per-prompt number"):
        dataset(tiny, "patchscope", [(p, -1, "zzz") for p in prompts], layer=0)


def test_steering_controls_must_be_beaten(tiny):
    """control=N: the vector's delta against N random vectors of its norm, seeded."""
    from pytest_interp.kinds.steering import SteeringExpectation
    from pytest_interp.probes.steering import random_like

    claim = SteeringExpectation("The cat sat on the", layer=1, coef=2.0, target=" the",
                                positive="I love this", negative="I hate this",
                                min_delta=-1e9, control=5)
    result = claim.run(tiny)
    vector = claim.steering_vector(tiny)
    assert len(result.controls) == 5
    for seed, value in enumerate(result.controls):
        random = random_like(vector, seed)
        assert float(random.norm()) == pytest.approx(float(vector.norm()), rel=1e-5)
        single = tiny.steer("The cat sat on the", random, layer=1, coef=2.0, target=" the")
        assert value == pytest.approx(float(single.delta[0]), abs=1e-6)
    edge = float(np.percentile(result.controls, 95))
    failure = claim.judge(result)
    delta = float(result.delta[0])
    if delta > edge:
        assert failure is None
    else:
        assert failure is not None and failure.startswith(
            f"steering: coef 2 moves the metric by {delta:+.3f}, but 5 random vectors of the "
            f"same norm move it up to {edge:+.3f} (95th percentile): {abs(delta - edge):.3f} "
            "short of beating the controls")
    with pytest.raises(InterpError, match=r"^control=N compares one coef's delta with random "
                                          r"vectors: pass one coef and one of min_delta= or "
                                          r"max_delta=$"):
        SteeringExpectation("a", layer=1, coef=[1, 2], target=" the", positive="a",
                            negative="b", min_delta=0, control=3)
