"""Circuits: edge scores (EAP, EAP-IG) against the EAP formula by raw HF hooks and autograd,
and a circuit's faithfulness (spliced edges) against its limits and exact patching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pytest_interp import metrics
from pytest_interp.model import InterpModel
from pytest_interp.probes.ablation import Case
from pytest_interp.probes.circuit import (
    EdgeAttribution,
    Faithfulness,
    edge_scores,
    faithfulness,
)
from pytest_interp.probes.graph import Graph

from .conftest import BACKENDS, TINY_SPECS
from .hf_reference import hf_input_grad, hf_run

CASES = (
    Case("When Mary and John went to the store, John gave a drink to", " Mary", " John",
         "When Mary and John went to the store, Anna gave a drink to"),
    Case("When Tom and Sue went to the park, Sue gave a ball to", " Tom", " Sue",
         "When Tom and Sue went to the park, Ben gave a ball to"),
)


def _direct_scores(raw, model: InterpModel, cases) -> dict[str, float]:
    """Each edge's EAP score from raw HF hooks: (a_u(corrupted) - a_u(clean)) . d metric /
    d input_v, summed over positions, averaged over rows, one autograd pass per reader."""
    graph = Graph(model.info)
    totals = np.zeros((len(graph.writers), len(graph.readers)))
    for case in cases:
        clean = model.tokens(case.prompt).tensor()
        corrupted = model.tokens(case.corrupted).tensor()
        measure = metrics.build("logit_diff", model.vocab, case.answer, case.foil)
        _, a_clean = hf_run(raw, clean)
        _, a_corr = hf_run(raw, corrupted)

        def writer(acts, w):
            value = acts[w.site.layer, w.site.component]
            return (value[:, :, w.head] if w.head is not None else value)[0].double()

        for j, r in enumerate(graph.readers):
            component = "logits" if r.name == "logits" else r.site.component
            grad = hf_input_grad(raw, clean, layer=r.site.layer, component=component,
                                 head=r.head, metric=measure)[0].double()
            for i, w in enumerate(graph.writers):
                if graph.valid[i, j]:
                    totals[i, j] += float(((writer(a_corr, w) - writer(a_clean, w)) * grad).sum())
    u, v = np.nonzero(graph.valid)
    return {name: totals[i, j] / len(cases)
            for name, i, j in zip(graph.edges, u, v, strict=True)}


@pytest.mark.parametrize("spec", TINY_SPECS)
def test_edge_scores_equal_the_eap_formula_by_raw_hf_autograd(spec, load_backend, load_raw_hf):
    raw = load_raw_hf(spec).model
    model = InterpModel(load_backend(spec, "transformer_lens"))
    want = _direct_scores(raw, model, CASES)
    for backend in BACKENDS:
        got = edge_scores(InterpModel(load_backend(spec, backend)), EdgeAttribution(CASES))
        assert got.edges == tuple(want)
        err = np.abs(got.scores - np.array(list(want.values()))).max()
        scale = np.abs(got.scores).max()
        assert err <= 1e-5 * max(1.0, scale), (backend, err, scale)
        assert scale > 1e-3  # the scores are not all zero


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gpt-neox"])
def test_eap_ig_with_one_step_is_eap_and_more_steps_differ(spec, load_backend):
    model = InterpModel(load_backend(spec))
    eap = edge_scores(model, EdgeAttribution(CASES))
    one = edge_scores(model, EdgeAttribution(CASES, method="eap-ig", steps=1))
    five = edge_scores(model, EdgeAttribution(CASES, method="eap-ig", steps=5))
    assert np.array_equal(eap.scores, one.scores)
    assert np.abs(five.scores - eap.scores).max() > 1e-6


def _logit_diff(model, prompts, case):
    measure = metrics.build("logit_diff", model.vocab, case.answer, case.foil)
    return [float(measure(model.run(p).logits[:, -1])[0]) for p in prompts]


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gemma3",
                                  "tiny-random-gpt-neox", "tiny-random-olmo2"])
def test_faithfulness_of_every_edge_is_one_and_of_none_is_zero(spec, load_backend):
    model = InterpModel(load_backend(spec))
    graph = Graph(model.info)
    everything = faithfulness(model, Faithfulness(CASES, graph.edges))
    assert np.abs(everything.patched - everything.clean).max() < 1e-4
    assert everything.value == pytest.approx(1.0, abs=1e-4)
    nothing = faithfulness(model, Faithfulness(CASES, ()))
    assert np.abs(nothing.patched - nothing.corrupted).max() < 1e-4
    assert nothing.value == pytest.approx(0.0, abs=1e-4)


def test_cutting_every_edge_out_of_a_head_is_patching_that_head(load_backend):
    """A head whose every outgoing edge is cut writes its corrupted output: exactly activation
    patching of its head_out from the corrupted run."""
    from pytest_interp.backends.base import Edit, Site

    model = InterpModel(load_backend("tiny-random-llama"))
    graph = Graph(model.info)
    case = CASES[0]
    kept = tuple(e for e in graph.edges if not e.startswith("L1H2->"))
    got = faithfulness(model, Faithfulness((case,), kept)).patched[0]
    corrupted = model.run(case.corrupted, read=[Site(1, "head_out")]).acts[Site(1, "head_out")]
    patched = model.run(case.prompt, edits=[Edit(Site(1, "head_out"), corrupted[:, :, 2],
                                                 head=2)])
    measure = metrics.build("logit_diff", model.vocab, case.answer, case.foil)
    assert got == pytest.approx(float(measure(patched.logits[:, -1])[0]), abs=1e-4)


def test_random_circuits_are_controls_of_the_same_size(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    scores = edge_scores(model, EdgeAttribution(CASES))
    top = scores.top(20)
    result = faithfulness(model, Faithfulness(CASES, top.edges, control=5, seed=1))
    assert len(result.controls) == 5
    assert result.low <= result.value <= result.high
    again = faithfulness(model, Faithfulness(CASES, top.edges, control=5, seed=1))
    assert again.controls == result.controls
    assert torch.isfinite(torch.tensor(result.controls)).all()


def test_mean_ablation_cuts_to_each_writers_mean_over_the_rows(load_backend):
    """ablation="mean": every edge kept is the clean run; a head whose every outgoing edge is
    cut writes its mean output over the rows (position by position)."""
    from pytest_interp.backends.base import Edit, Site

    model = InterpModel(load_backend("tiny-random-llama"))
    graph = Graph(model.info)
    everything = faithfulness(model, Faithfulness(CASES, graph.edges, ablation="mean"))
    assert np.abs(everything.patched - everything.clean).max() < 1e-4
    kept = tuple(e for e in graph.edges if not e.startswith("L1H2->"))
    got = faithfulness(model, Faithfulness(CASES, kept, ablation="mean")).patched
    prompts = [c.prompt for c in CASES]
    heads = model.run(prompts, read=[Site(1, "head_out")]).acts[Site(1, "head_out")]
    mean = heads[:, :, 2].mean(0, keepdim=True).expand(len(CASES), -1, -1)
    patched = model.run(prompts, edits=[Edit(Site(1, "head_out"), mean, head=2)])
    for i, case in enumerate(CASES):
        measure = metrics.build("logit_diff", model.vocab, case.answer, case.foil)
        assert got[i] == pytest.approx(float(measure(patched.logits[i:i + 1, -1])[0]), abs=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_weights_read_in_an_inference_run_serve_a_gradient_run(load_backend, backend):
    """The per-head weights a plain run caches (a fused q/k/v projection's rows, the output
    projection per head) are plain tensors: a later gradient run can save them."""
    from pytest_interp.backends.base import Edit, Site

    model = InterpModel(load_backend("tiny-random-gpt2", backend, dtype="float32"))
    value = torch.ones(model.info.d_model)
    model.run(CASES[0].prompt, read=[Site(1, "head_out")],
              edits=[Edit(Site(1, "q_input"), value, mode="add", head=0)])
    scores = edge_scores(model, EdgeAttribution(CASES))
    assert np.isfinite(scores.scores).all()
