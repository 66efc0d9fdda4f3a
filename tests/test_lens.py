"""Logit lens and tuned lens: results, expectations, agreement with TransformerLens, training."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_interp.errors import InterpError
from pytest_interp.kinds.lens import LensExpectation
from pytest_interp.lenses import TunedLens
from pytest_interp.probes.lens import TrainConfig, train_tuned_lens
from pytest_interp.results import LensResult, Vocab

FACT = "The capital of France is"
CORPUS = Path(__file__).parent / "data" / "lens_corpus.txt"
VOCAB = Vocab.from_strings([" Paris", " London", " the", " a", "."])


def hand_built(logits: list[list[float]]) -> LensResult:
    """A 1-position LensResult over VOCAB with the given per-layer logits."""
    arr = np.array(logits, dtype=np.float32)[:, None, :]
    return LensResult(model="toy", lens="logit", prompt="Capital is", str_tokens=("Capital", " is"),
                      positions=(1,), logits=arr, final_logits=arr[-1], vocab=VOCAB)


TOY = hand_built([
    [0.0, 1.0, 3.0, 2.0, 0.5],   # layer 0: ' the' top, Paris rank 4
    [1.0, 2.0, 3.0, 0.0, 0.0],   # layer 1: Paris rank 2
    [3.0, 2.5, 1.0, 0.0, 0.0],   # layer 2: Paris top
    [2.0, 3.0, 1.0, 0.0, 0.0],   # layer 3: London top, Paris rank 1
])


def test_ranks_probs_top_and_emergence_on_a_hand_built_result():
    assert TOY.ranks(" Paris") == [4, 2, 0, 1]
    assert TOY.rank(" Paris", layer=-2) == 0
    assert TOY.emergence_layer(" Paris") is None
    assert TOY.emergence_layer(" Paris", top_k=2) == 2
    assert TOY.emergence_layer(" London", top_k=1) == 3
    probs = np.exp(TOY.logits[3, 0]) / np.exp(TOY.logits[3, 0]).sum()
    assert TOY.prob(" Paris", 3) == pytest.approx(probs[0])
    assert [t for t, _ in TOY.top(0, k=2)] == [" the", " a"]
    assert TOY.kl_to_final[-1, 0] == pytest.approx(0.0, abs=1e-12)
    assert (TOY.kl_to_final[:-1, 0] > 0).all()


def test_result_errors_name_the_fix():
    with pytest.raises(InterpError) as info:
        TOY.rank(" Paris", layer=4)
    assert str(info.value) == (
        "layer 4 is out of range for toy with 4 layers: use 0..3 (or -4..-1 from the end)"
    )
    with pytest.raises(InterpError) as info:
        TOY.rank(" Paris", layer=0, position=0)
    assert str(info.value) == (
        "position 0 was not read for this prompt (read: 1): pass positions=[..., 0] to the lens"
    )
    with pytest.raises(InterpError) as info:
        TOY.rank("Paris!", layer=0)
    assert str(info.value).startswith("target 'Paris!' is not a single token: it tokenizes to ")


def test_failure_text_is_the_whole_trajectory_with_the_failing_layer_marked():
    text = LensExpectation("Capital is", " Paris", layer=-1, top_k=1).judge(TOY)
    assert text == "\n".join([
        "lens: ' Paris' has rank 1 at layer 3, expected top_k=1 (rank < 1)",
        "logit lens on 'Capital is' at position -1 (' is'), target ' Paris'",
        "  layer  top-3                                          rank     prob",
        "      0  ' the' 0.61  ' a' 0.22  ' London' 0.08            4   0.0304",
        "      1  ' the' 0.62  ' London' 0.23  ' Paris' 0.08        2   0.0844",
        "      2  ' Paris' 0.54  ' London' 0.33  ' the' 0.07        0   0.5431",
        ">     3  ' London' 0.62  ' Paris' 0.23  ' the' 0.08        1   0.2295",
    ])


def test_failure_headlines_for_min_prob_and_emergence():
    text = LensExpectation("Capital is", " Paris", layer=2, min_prob=0.9).judge(TOY)
    assert text.splitlines()[0] == (
        "lens: ' Paris' has prob 0.5431 at layer 2, expected min_prob=0.9"
    )
    assert text.splitlines()[5].startswith(">     2  ")
    text = LensExpectation("Capital is", " Paris", emerges_by=1).judge(TOY)
    assert text.splitlines()[0] == (
        "lens: ' Paris' is not in the top-1 at the last layer, expected it to emerge by layer 1 "
        "(emerges_by=1)"
    )
    text = LensExpectation("Capital is", " Paris", emerges_by=1, top_k=2).judge(TOY)
    assert text.splitlines()[0] == (
        "lens: ' Paris' stays in the top-2 only from layer 2, expected by layer 1 (emerges_by=1)"
    )
    assert LensExpectation("Capital is", " Paris", emerges_by=2, top_k=2).judge(TOY) is None
    assert LensExpectation("Capital is", " Paris", layer=2, top_k=1).judge(TOY) is None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "no check given: pass top_k=, min_prob= or emerges_by="),
    ({"top_k": 1}, "top_k= and min_prob= need layer= (a block index, -1 for the last)"),
    ({"layer": 1, "emerges_by": 2},
     "layer= and emerges_by= are exclusive: emerges_by checks every layer from it on"),
    ({"emerges_by": 2, "min_prob": 0.5},
     "min_prob= does not combine with emerges_by= (emergence is by rank: use top_k=)"),
    ({"layer": 1, "top_k": 0}, "top_k must be >= 1, got 0"),
    ({"layer": 1, "min_prob": float("nan")}, "min_prob must be a probability in (0, 1], got nan"),
    ({"layer": "last", "top_k": 1}, "layer must be an int, got 'last'"),
])
def test_expectation_combinations_are_checked(kwargs, message):
    with pytest.raises(InterpError) as info:
        LensExpectation("p", " Paris", **kwargs)
    assert str(info.value) == message


def test_paris_is_top1_at_the_last_layer_of_smollm2(smollm2):
    lens = smollm2.logit_lens(FACT)
    assert lens.rank(" Paris", layer=-1) == 0
    assert lens.top(-1, k=1)[0][0] == " Paris"
    assert lens.emergence_layer(" Paris", top_k=3) == 28
    final = smollm2.run(FACT).logits[0, -1]
    assert np.abs(lens.logits[-1, 0] - final.numpy()).max() <= 1e-4


def test_ranks_equal_transformer_lens_logit_lens(smollm2):
    from transformer_lens.tools.analysis.logit_lens import logit_lens as tl_logit_lens

    tokens = smollm2.tokens(FACT)
    paris = smollm2.vocab.id(" Paris")
    theirs = tl_logit_lens(smollm2.backend.bridge, tokens.tensor(), targets=[paris], positions=-1)
    assert theirs.labels[1:] == [f"{i}_pre" for i in range(1, 30)] + ["final_post"]
    tl_ranks = theirs.rank_trajectory(paris)[1:, 0].tolist()  # entry 0 is the embeddings
    ours = smollm2.logit_lens(FACT).ranks(" Paris")
    print("\nlayer ranks of ' Paris' (ours == TransformerLens):", ours)
    assert ours == tl_ranks


@pytest.mark.slow
def test_lens_is_identical_between_backends(smollm2, smollm2_nnsight):
    prompt = "When Mary and John went to the store, John gave a drink to"
    a = smollm2.logit_lens(prompt, positions=None)
    b = smollm2_nnsight.logit_lens(prompt, positions=None)
    for token in (" Mary", " John", " the"):
        for pos in range(len(a.str_tokens)):
            assert a.ranks(token, pos) == b.ranks(token, pos)
            for layer in range(a.n_layers):
                assert abs(a.prob(token, layer, pos) - b.prob(token, layer, pos)) <= 1e-5
    assert np.abs(a.kl_to_final - b.kl_to_final).max() <= 1e-4


def test_identity_tuned_lens_is_the_logit_lens(smollm2):
    identity = TunedLens.identity(576, 30)
    identity.path = "identity"
    a, b = smollm2.logit_lens(FACT), smollm2.tuned_lens(FACT, lens=identity)
    assert np.array_equal(a.logits, b.logits)


def test_tuned_lens_folder_matches_tuned_lens_layout(tmp_path):
    """Write a lens exactly as tuned-lens's TunedLens.save does; read it; write it back."""
    d, n = 8, 3
    translators = torch.nn.ModuleList([torch.nn.Linear(d, d, bias=True) for _ in range(n)])
    torch.save(translators.state_dict(), tmp_path / "params.pt")
    config = {"base_model_name_or_path": "toy", "d_model": d, "num_hidden_layers": n,
              "bias": True, "base_model_revision": None, "unembed_hash": None,
              "lens_type": "linear_tuned_lens"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    lens = TunedLens.load(tmp_path)
    h = torch.randn(5, d)
    for i in range(n):  # tuned-lens's transform_hidden: h + translator(h)
        assert torch.allclose(lens.translate(h, i), h + translators[i](h), atol=1e-6)
    lens.save(tmp_path / "again")
    reloaded = torch.nn.ModuleList([torch.nn.Linear(d, d) for _ in range(n)])
    reloaded.load_state_dict(torch.load(tmp_path / "again" / "params.pt"), strict=True)
    assert json.loads((tmp_path / "again" / "config.json").read_text()) == config


def test_tuned_lens_errors(tmp_path, smollm2):
    with pytest.raises(InterpError) as info:
        TunedLens.load(tmp_path)
    assert str(info.value) == (
        f"tuned lens {str(tmp_path)!r} needs config.json and params.pt in one folder: train one "
        "with `pytest-interp lens train --model SPEC --text FILE --out DIR`"
    )
    small = TunedLens.identity(8, 3)
    small.path = "small"
    with pytest.raises(InterpError) as info:
        smollm2.tuned_lens(FACT, lens=small)
    assert str(info.value) == (
        "tuned lens 'small' was trained for a model with 3 layers and d_model 8, but "
        "smollm2-135m has 30 and 576: train one for it with `pytest-interp lens train "
        "--model smollm2-135m --text FILE --out DIR`"
    )


@pytest.mark.slow
def test_trained_tuned_lens_beats_the_logit_lens_at_middle_layers(smollm2, tmp_path):
    texts = [p for p in CORPUS.read_text().split("\n\n") if p.strip()]
    layers = (10, 20)  # blocks; their outputs are read by translators 11 and 21
    config = TrainConfig(steps=15, batch=1, seq_len=64, layers=tuple(i + 1 for i in layers))
    lens = train_tuned_lens(smollm2, texts, tmp_path / "lens", config, progress=False)
    held_out = ["The tallest mountain in the world is Mount Everest, on the border of Nepal.",
                "She opened the door, looked at the rain, and decided to stay home and read."]
    for prompt in held_out:
        logit = smollm2.logit_lens(prompt, positions=None)
        tuned = smollm2.tuned_lens(prompt, lens=lens, positions=None)
        for layer in layers:
            kl_logit = logit.kl_to_final[layer].mean()
            kl_tuned = tuned.kl_to_final[layer].mean()
            print(f"\n{prompt[:30]!r} layer {layer}: KL to final, logit lens {kl_logit:.2f} "
                  f"nats, tuned lens {kl_tuned:.2f} nats")
            assert kl_tuned < 0.75 * kl_logit
    reloaded = smollm2.tuned_lens(FACT, lens=str(tmp_path / "lens"))
    assert np.allclose(reloaded.logits, smollm2.tuned_lens(FACT, lens=lens).logits, atol=1e-5)


@pytest.mark.slow
def test_cli_trains_resumably_and_writes_the_tuned_lens_layout(tmp_path):
    out = tmp_path / "lens"
    command = [sys.executable, "-m", "pytest_interp.lens", "train", "--model",
               "tiny-random-llama", "--text", str(CORPUS), "--out", str(out), "--batch", "2",
               "--seq-len", "32", "--quiet"]
    first = subprocess.run([*command, "--steps", "3"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == f"tuned lens written to {out}"
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["step"] == 3
    second = subprocess.run([*command, "--steps", "5"], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    assert torch.load(out / "checkpoint.pt", weights_only=True)["step"] == 5
    lens = TunedLens.load(out)
    assert lens.weight.shape == (3, 64, 64) and lens.weight.abs().sum() > 0
    assert json.loads((out / "config.json").read_text())["lens_type"] == "linear_tuned_lens"
    missing = subprocess.run([*command[:-7], "--text", str(tmp_path / "none.txt"), "--out",
                              str(out)], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        f"error: --text {str(tmp_path / 'none.txt')!r}: no such file: pass a UTF-8 text file"
    )


def test_a_lens_dataset_runs_one_pass_per_token_length_and_equals_each_prompt_alone(
        load_backend):
    """Rows of three token lengths (one prompt twice), two positions and a tuned lens: one
    forward pass per (lens, position, length) group, and every row's readout equals
    ``model.lens`` alone within 1e-5 (a batch of 2 rows per pass also splits the groups)."""
    from pytest_interp.dataset_expectation import dataset
    from pytest_interp.model import InterpModel

    tiny = InterpModel(load_backend("tiny-random-llama"))
    tuned = TunedLens.identity(tiny.info.d_model, tiny.info.n_layers)
    tuned.bias += torch.randn(tuned.bias.shape, generator=torch.Generator().manual_seed(0))
    prompts = [FACT, "The capital of Spain is", "Hello", "Hello there", "Hi there", "Hey", FACT]
    assert len({tiny.tokens(p).length for p in prompts}) == 3
    rows = [{"prompt": p, "target": " the"} for p in prompts]
    before = tiny.memo.stats.passes
    result = dataset(tiny, "lens", rows, emerges_by=0, stat="fraction", min_fraction=0)
    assert tiny.memo.stats.passes - before == 3  # one forward pass per token length
    assert result.results[0] is result.results[-1]  # a prompt given twice is read once
    expectations = [LensExpectation(p, " the", emerges_by=0, lens=lens, position=pos)
                    for p in prompts for lens, pos in (("logit", -1), (tuned, -1), (tuned, 0))]
    from pytest_interp.probes.lens import run_lenses

    assert len(run_lenses(tiny, prompts, batch_size=2)) == len(prompts)
    for got, e in [*zip(result.results, expectations[::3], strict=True),
                   *zip(LensExpectation.run_many(tiny, expectations), expectations,
                        strict=True)]:
        alone = tiny.lens(e.prompt, lens=e.lens, positions=e.position)
        assert got.prompt == e.prompt and got.positions == alone.positions
        assert got.str_tokens == alone.str_tokens and got.lens == alone.lens
        np.testing.assert_allclose(got.logits, alone.logits, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.final_logits, alone.final_logits, rtol=0, atol=1e-5)
