"""Steering: vectors, files, batched coefficient sweeps, exact text, agreement with raw HF."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp.backends.base import Edit, Site
from pytest_interp.errors import InterpError
from pytest_interp.kinds.steering import SteeringExpectation
from pytest_interp.model import InterpModel
from pytest_interp.results import SteeringResult

PROMPT = "I think this movie is"
POSITIVE, NEGATIVE = "I love this", "I hate this"


# ---------------------------------------------------------------------------
# Hand-built results and expectations: exact failure text


def _result(texts=("wow", "meh", "ok")) -> SteeringResult:
    return SteeringResult(
        model="m", prompt="p", layer=3, site="resid_pre", positions="all", vector_norm=12.5,
        coefs=(0.0, 1.0, 4.0), target=" great", foil=" bad", baseline=1.0,
        values=np.array([1.0, 1.5, 4.0]), kl=np.array([0.0, 0.25, 1.5]),
        baseline_top=((" a", 0.5), (" b", 0.25)),
        steered_top=(((" a", 0.5), (" b", 0.25)), ((" a", 0.4),), ((" great", 0.6),)),
        baseline_text="wow", texts=texts,
    )


def test_result_delta_and_table():
    result = _result()
    assert result.delta.tolist() == [0.0, 0.5, 3.0]
    assert result.text(4.0) == "ok"
    assert result.table([1]).splitlines() == [
        "steering at resid_pre@3 (vector norm 12.5, positions all) on 'p': ' great' - ' bad' "
        "logit diff at the last position",
        "      coef     value     delta       KL  top-5 next tokens",
        "  baseline     1.000                     ' a' 0.50, ' b' 0.25",
        "         0     1.000    +0.000    0.000  ' a' 0.50, ' b' 0.25",
        ">        1     1.500    +0.500    0.250  ' a' 0.40",
        "         4     4.000    +3.000    1.500  ' great' 0.60",
        "  greedy generations:",
        "  baseline  'wow'",
        "         0  'wow'",
        ">        1  'meh'",
        "         4  'ok'",
    ]
    with pytest.raises(InterpError) as err:
        result.text(2.0)
    assert str(err.value) == "coef 2.0 was not swept (swept: [0.0, 1.0, 4.0])"


def test_expectation_failure_text():
    result = _result()
    ok = SteeringExpectation("p", layer=3, coef=[1, 4], target=" great", foil=" bad",
                             positive="a", negative="b", min_delta=0.5)
    assert ok.judge(result) is None
    bad = SteeringExpectation("p", layer=3, coef=[1, 4], target=" great", foil=" bad",
                              positive="a", negative="b", min_delta=1, max_delta=2.5,
                              generation_contains=["ok", "wow"])
    lines = bad.judge(result).splitlines()
    assert lines[:3] == [
        "steering: coef 1 moves the ' great' - ' bad' logit diff by +0.500, expected "
        "min_delta=1",
        "steering: the coef 1 generation 'meh' does not contain 'ok' or 'wow'",
        "steering: coef 4 moves the ' great' - ' bad' logit diff by +3.000, expected "
        "max_delta=2.5",
    ]
    assert lines[7:9] == [">        1     1.500    +0.500    0.250  ' a' 0.40",
                          ">        4     4.000    +3.000    1.500  ' great' 0.60"]


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(), "no check given: pass min_delta=, max_delta= or generation_contains="),
    (dict(min_delta=1, positive=None), "no vector: pass positive= and negative= prompts, or "
                                       "vector=FILE"),
    (dict(min_delta=1, vector="v.npy"), "pass either vector= or positive= and negative=, not both"),
    (dict(min_delta=1, positive=["a", "b"]), "2 positive but 1 negative prompts: pass as many "
                                             "of each"),
    (dict(min_delta=1, coef=[]), "coef must be a number or a non-empty list of numbers, got []"),
    (dict(min_delta=1, coef=float("nan")), "coef must be a finite number, got nan"),
    (dict(min_delta=1, site="head_out"), "site 'head_out' cannot be steered: use one of "
                                         "resid_pre, resid_mid, resid_post, attn_out, mlp_out"),
    (dict(min_delta=2, max_delta=1), "min_delta=2 is greater than max_delta=1"),
    (dict(min_delta=1, positions="first"), "positions must be 'all', 'last' or an int N, got "
                                           "'first'"),
    (dict(generation_contains=""), "generation_contains must be a non-empty string or a list of "
                                   "them, got ''"),
])
def test_expectation_rejects_bad_arguments(kwargs, message):
    args = dict(prompt="p", layer=1, coef=2.0, target=" great", positive="a", negative="b")
    with pytest.raises(InterpError) as err:
        SteeringExpectation(**(args | kwargs))
    assert str(err.value) == message


# ---------------------------------------------------------------------------
# Tiny model: vectors, files, batching


@pytest.fixture(scope="module")
def tiny(load_backend):
    return InterpModel(load_backend("tiny-random-llama"))


def test_vectors_actadd_and_caa(tiny):
    site = Site(1, "resid_pre")
    act = {p: tiny.run(p, read=[site]).acts[site][0, -1] for p in (POSITIVE, NEGATIVE,
                                                                   "I like that", "I fear that")}
    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    assert torch.equal(v, act[POSITIVE] - act[NEGATIVE])
    caa = tiny.steering_vector([POSITIVE, "I like that"], [NEGATIVE, "I fear that"], layer=1)
    expected = ((act[POSITIVE] - act[NEGATIVE]) + (act["I like that"] - act["I fear that"])) / 2
    torch.testing.assert_close(caa, expected, rtol=0, atol=1e-6)
    with pytest.raises(InterpError) as err:
        tiny.steering_vector(POSITIVE, POSITIVE, layer=1)
    assert str(err.value) == ("the resid_pre@1 difference of the prompts is zero (norm 0): use "
                              "prompts whose activations differ there")
    with pytest.raises(InterpError) as err:
        tiny.steering_vector([POSITIVE], [NEGATIVE, NEGATIVE], layer=1)
    assert str(err.value) == ("1 positive but 2 negative prompts: pass pairs, as many of each "
                              "(at least one)")


def test_vector_files_round_trip_and_errors(tiny, tmp_path):
    from safetensors.torch import save_file

    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    torch.save(v, tmp_path / "v.pt")
    np.save(tmp_path / "v.npy", v.numpy())
    save_file({"vector": v.contiguous()}, str(tmp_path / "v.safetensors"))
    for name in ("v.pt", "v.npy", "v.safetensors"):
        assert torch.equal(tiny.load_vector(str(tmp_path / name)), v)
    torch.save({"a": v, "b": v}, tmp_path / "two.pt")
    np.save(tmp_path / "short.npy", np.ones(3, dtype=np.float32))
    np.save(tmp_path / "zero.npy", np.zeros(tiny.info.d_model, dtype=np.float32))
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    d = tiny.info.d_model
    cases = {
        "missing.npy": f"steering vector file '{tmp_path}/missing.npy' does not exist: check the "
                       "path",
        "v.txt": f"steering vector file '{tmp_path}/v.txt' is not .pt, .npy, .safetensors: save "
                 "the vector with torch.save, numpy.save or safetensors",
        "two.pt": f"steering vector file '{tmp_path}/two.pt' holds ['a', 'b']: store one tensor, "
                  "or name it 'vector'",
        "short.npy": f"the steering vector in '{tmp_path}/short.npy' has shape [3], expected "
                     f"[{d}] (the model's d_model)",
        "zero.npy": f"the steering vector in '{tmp_path}/zero.npy' is zero (norm 0): use prompts "
                    "whose activations differ there",
    }
    for name, message in cases.items():
        with pytest.raises(InterpError) as err:
            tiny.load_vector(str(tmp_path / name))
        assert str(err.value) == message
    with pytest.raises(InterpError) as err:
        tiny.load_vector(str(tmp_path / "corrupt.pt"))
    assert str(err.value).startswith(f"steering vector file '{tmp_path}/corrupt.pt' cannot be "
                                     "read (")
    assert str(err.value).endswith("): save one tensor of shape [d_model]")


@pytest.mark.parametrize("positions", ["all", "last", 2])
def test_batched_sweep_equals_one_run_per_coef(tiny, positions):
    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    result = tiny.steer(PROMPT, v, layer=1, coef=[0, 3, -3, 10], positions=positions,
                        target=" great", foil=" bad")
    n = tiny.tokens(PROMPT).length
    where = {"all": None, "last": (n - 1,), 2: tuple(range(2, n))}[positions]
    great, bad = tiny.vocab.id(" great"), tiny.vocab.id(" bad")
    base = tiny.backend.run(tiny.tokens(PROMPT)).logits[0, -1]
    assert result.baseline == pytest.approx(float(base[great] - base[bad]), abs=1e-5)
    for coef, value in zip(result.coefs, result.values, strict=True):
        edit = Edit(Site(1, "resid_pre"), coef * v, mode="add", positions=where)
        logits = tiny.backend.run(tiny.tokens(PROMPT), edits=[edit]).logits[0, -1]
        assert value == pytest.approx(float(logits[great] - logits[bad]), abs=1e-4)
    assert result.delta[0] == 0 and result.kl[0] == 0  # coef 0 is the baseline itself
    assert abs(result.delta[1]) > 1e-3


def test_steer_many_equals_one_steer_per_spec(tiny):
    """Specs of several prompts, lengths, layers, sites and coefficient sets, a prompt given
    twice and one that generates: batched (a chunk of at most 5 rows, so groups split), each
    result equals ``steer`` alone within 1e-5."""
    from pytest_interp.probes.steering import Steering, Vector, random_like, steer, steer_many

    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    prompts = [PROMPT, "The food here is", "Honestly, I found the ending of this film", PROMPT]
    specs = [Steering(p, Vector(vec), layer=layer, coef=coef, site=site, positions=pos,
                      target=" great", foil=foil)
             for p in prompts
             for vec, layer, coef, site, pos, foil in (
                 (v, 1, (2.0,), "resid_pre", "all", " bad"),
                 (random_like(v, 3), 0, (0.0, -1.5, 4.0), "resid_post", "last", None),
                 (v, 1, (1.0, 1.0), "resid_pre", 1, " bad"))]
    specs.append(Steering(PROMPT, Vector(v), layer=1, coef=(0.0, 8.0), target=" great",
                          max_new_tokens=3))
    assert len({len(tiny.tokens(p).ids[0]) for p in prompts}) == 3
    before = tiny.memo.stats.passes
    steer_many(tiny, specs[:-1])
    assert tiny.memo.stats.passes - before == 3  # one forward pass per token length
    batched = steer_many(tiny, specs, max_rows=5)
    for spec, got in zip(specs, batched, strict=True):
        alone = steer(tiny, spec)
        assert got.coefs == alone.coefs and got.prompt == spec.prompt
        np.testing.assert_allclose(got.values, alone.values, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.kl, alone.kl, rtol=0, atol=1e-5)
        assert [t for t, _ in got.steered_top[-1]] == [t for t, _ in alone.steered_top[-1]]
        assert got.texts == alone.texts


def test_a_sweep_of_datasets_shares_its_passes_and_equals_each_dataset_alone(tiny):
    """``datasets``: two layers and a control over prompts of three token lengths run as
    one batch (one pass per length, after the steering vectors' four: each prompt read at
    layer 1, then at every layer), and each estimate equals ``dataset`` alone within 1e-5."""
    from pytest_interp.dataset_expectation import dataset, datasets

    prompts = [PROMPT, "The food here is", "Honestly, I found the ending of this film"]
    common = dict(positive=POSITIVE, negative=NEGATIVE, target=" great", foil=" bad", coef=2)
    variants = [{"layer": 1}, {"layer": 2}, {"layer": 1, "coef": -1, "control": 4}]
    tiny.forget()
    before = tiny.memo.stats.passes
    swept = datasets(tiny, "steering", prompts, variants, min_delta=-100, **common)
    assert tiny.memo.stats.passes - before == 4 + 3
    for variant, got in zip(variants, swept, strict=True):
        tiny.forget()
        alone = dataset(tiny, "steering", prompts, min_delta=-100, **{**common, **variant})
        assert got.verdict == alone.verdict
        np.testing.assert_allclose(got.values, alone.values, rtol=0, atol=1e-5)
        np.testing.assert_allclose([r.controls for r in got.results],
                                   [r.controls for r in alone.results], rtol=0, atol=1e-5)
    with pytest.raises(InterpError, match=r"^no expectation kind 'steer': use one of "):
        datasets(tiny, "steer", prompts, variants)


def test_dataset_controls_equal_one_marker_per_row(tiny):
    """A steering dataset's rows and their random-vector controls, run batched, give the
    deltas and controls each row gives as a marker of its own."""
    rows = [SteeringExpectation(p, layer=1, coef=2, target=" great", foil=" bad",
                                positive=POSITIVE, negative=NEGATIVE, min_delta=0, control=4)
            for p in (PROMPT, "The food here is", "This book is")]
    batched = SteeringExpectation.run_many(tiny, rows)
    for row, got in zip(rows, batched, strict=True):
        alone = row.run(tiny)
        assert len(got.controls) == 4
        np.testing.assert_allclose(got.controls, alone.controls, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.delta, alone.delta, rtol=0, atol=1e-5)


def test_generation_greedy_sampled_and_logprob_metric(tiny):
    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    greedy = tiny.steer(PROMPT, v, layer=1, coef=[0, 20], target=" great", max_new_tokens=6)
    assert greedy.metric == "log prob" and greedy.values[0] <= 0
    assert greedy.text(0) == greedy.baseline_text == tiny.generate(PROMPT, max_new_tokens=6)
    a = tiny.steer(PROMPT, v, layer=1, coef=[0, 20], max_new_tokens=6, sample=True, seed=1)
    b = tiny.steer(PROMPT, v, layer=1, coef=[0, 20], max_new_tokens=6, sample=True, seed=1)
    c = tiny.steer(PROMPT, v, layer=1, coef=[0, 20], max_new_tokens=6, sample=True, seed=2)
    tiny.memo.clear()  # recompute: sampling is reproducible from the seed alone
    again = tiny.steer(PROMPT, v, layer=1, coef=[0, 20], max_new_tokens=6, sample=True, seed=1)
    assert a.texts == again.texts and a is b
    assert c.texts != a.texts
    assert a.values is None and "sampled generations:" in a.table()


def test_steer_errors(tiny):
    v = tiny.steering_vector(POSITIVE, NEGATIVE, layer=1)
    with pytest.raises(InterpError) as err:
        tiny.steer(PROMPT, v[:5], layer=1)
    assert str(err.value) == (f"the steering vector has shape [5], expected "
                              f"[{tiny.info.d_model}] (the model's d_model)")
    with pytest.raises(InterpError) as err:
        tiny.steer(PROMPT, v, layer=1, positions=9)
    assert str(err.value) == ("positions must be 'all', 'last' or an int N (steer positions N.. "
                              "of the 5-token prompt), got 9")
    with pytest.raises(InterpError) as err:
        tiny.steer(PROMPT, v, layer=5)
    assert str(err.value).startswith("layer 5 is out of range for tiny-random-llama")


# ---------------------------------------------------------------------------
# SmolLM2: a real effect, backends and raw HF agree


@pytest.mark.slow
def test_smollm2_sentiment_vector_moves_the_review(smollm2, smollm2_nnsight, load_raw_hf):
    results = []
    for model in (smollm2, smollm2_nnsight):
        v = model.steering_vector(POSITIVE, NEGATIVE, layer=16)
        results.append(model.steer(PROMPT, v, layer=16, coef=[0, 1, 2, -2], positions=1,
                                   target=" great", foil=" terrible", max_new_tokens=8))
    ours, other = results
    assert ours.delta[0] == 0 and ours.kl[0] == 0
    assert ours.delta[1] > 2 and ours.delta[2] > 4  # a clear margin, in logits
    assert ours.delta[3] < -2
    np.testing.assert_allclose(ours.values, other.values, atol=1e-4)
    np.testing.assert_allclose(ours.kl, other.kl, atol=1e-4)
    assert ours.texts == other.texts

    raw = load_raw_hf("smollm2-135m").model
    v = smollm2.steering_vector(POSITIVE, NEGATIVE, layer=16)
    ids = smollm2.tokens(PROMPT).tensor()
    great, terrible = smollm2.vocab.id(" great"), smollm2.vocab.id(" terrible")
    for coef, value in zip(ours.coefs, ours.values, strict=True):
        def add(module, args, kwargs, coef=coef):
            hidden = args[0].clone()
            hidden[:, 1:] += coef * v
            return (hidden, *args[1:]), kwargs

        handle = raw.model.layers[16].register_forward_pre_hook(add, with_kwargs=True)
        try:
            with torch.inference_mode():
                logits = raw(ids).logits[0, -1]
        finally:
            handle.remove()
        assert value == pytest.approx(float(logits[great] - logits[terrible]), abs=1e-4)
