"""Snapshots of what SmolLM2 does inside: re-run on a new checkpoint to see what changed.

Accept an intended change with ``--snapshot-update``; the files in ``__snapshots__`` are
readable text (one JSON line per layer, head, layer pair or coefficient).
"""

from __future__ import annotations

FACT = "The capital of France is"
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"


def test_recall_trajectory(interp_model, interp_snapshot):
    lens = interp_model.logit_lens(FACT)
    assert lens.rank(" Paris", layer=-1) == 0
    assert interp_snapshot == lens


def test_ioi_patching_grid(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.activation_patching(
        IOI_CLEAN, IOI_CORRUPTED, answer=" Mary", foil=" John", site="resid_pre")


def test_patchscope_readout(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.patchscope(
        "Amazon's former CEO attended Oscars", " CEO", layer=range(30), expected="CEO")


def test_steering_effect(interp_model, interp_snapshot):
    v = interp_model.steering_vector("I love this", "I hate this", layer=16)
    assert interp_snapshot == interp_model.steer(
        "I think this movie is", v, layer=16, coef=[0, 1, 2, -2], positions=1,
        target=" great", foil=" terrible", max_new_tokens=12)


def test_attention_heads(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.attention()


def test_greedy_answer(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.generation(FACT, max_new_tokens=12)
