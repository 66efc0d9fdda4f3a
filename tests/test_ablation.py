"""Ablation: the probe against raw HF hooks, batching, controls, the marker and its texts."""

from __future__ import annotations

import pytest
import torch

from pytest_interp.backends.architectures import family_of
from pytest_interp.backends.base import Edit
from pytest_interp.errors import InterpError, SiteError
from pytest_interp.kinds.ablation import AblationExpectation
from pytest_interp.model import InterpModel
from pytest_interp.probes.ablation import (
    Case,
    ablated_metrics,
    complement,
    part_means,
    random_sets,
    universe,
)
from pytest_interp.results import AblationResult
from pytest_interp.sites import Part, parse_part

from .pytester_helpers import DATASET_USAGE, assert_collection_error, assert_fails_when_run, ini

pytest_plugins = ["pytester"]

ABLATION_USAGE = (
    "@pytest.mark.ablation(prompt, *, answer, foil=None, ablate=None, keep=None, method='mean', "
    "corrupted=None, reference=None, positions=None, metric=None, min_drop=None, "
    "max_drop=None, min_faithfulness=None, max_faithfulness=None, control=0, percentile=95.0, "
    "seed=0, min_effect=None, sae=None" + DATASET_USAGE
)
PROMPT, CORRUPTED = "The cat sat on the mat", "The dog sat on the mat"


def _get(root, path):
    for part in path.split("."):
        root = getattr(root, part)
    return root


@torch.inference_mode()
def hf_zero_ablated(model, ids: torch.Tensor, parts: list[Part]) -> torch.Tensor:
    """Last-position logits with parts zero-ablated the plain way: a head's slice of the
    output projection's input zeroed, an attention layer's or MLP's output module zeroed."""
    layout = family_of(model.config.architectures[0]).layout
    blocks = _get(model, layout.blocks)
    n_heads = model.config.num_attention_heads
    handles = []
    for part in parts:
        block = blocks[part.layer]
        if part.kind == "head":
            o_proj = _get(_get(block, layout.attn), layout.o_proj)

            def zero_head(module, args, head=part.head):
                z = args[0].clone()
                width = z.shape[-1] // n_heads
                z[..., head * width:(head + 1) * width] = 0
                return (z, *args[1:])

            handles.append(o_proj.register_forward_pre_hook(zero_head))
        else:
            module = _get(block, layout.attn_out if part.kind == "attn" else layout.mlp_out)

            def zero(module, args, output):
                if isinstance(output, tuple):
                    return (torch.zeros_like(output[0]), *output[1:])
                return torch.zeros_like(output)

            handles.append(module.register_forward_hook(zero))
    try:
        return model(ids).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gpt2", "tiny-random-gemma3",
                                  "tiny-random-gpt-neox"])
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_zero_ablation_equals_raw_hf_hooks(load_backend, load_raw_hf, spec, backend):
    model = InterpModel(load_backend(spec, backend))
    raw = load_raw_hf(spec).model
    sets = [[Part(1, "head", 2)], [Part(0, "mlp"), Part(2, "attn")],
            [Part(0, "head", 0), Part(2, "head", 3), Part(1, "mlp")]]
    answer, foil = " the", " a"
    clean, values = ablated_metrics(model, [Case(PROMPT, answer, foil)],
                                    [frozenset(s) for s in sets], method="zero",
                                    metric="logit_diff")
    a, f = model.vocab.id(answer), model.vocab.id(foil)
    ids = model.tokens(PROMPT).tensor()
    for j, parts in enumerate(sets):
        logits = hf_zero_ablated(raw, ids, parts)  # soft-capped by HF itself (Gemma)
        assert abs(float(logits[a] - logits[f]) - values[0, j]) <= 1e-4, parts
    plain = raw(ids).logits[0, -1].detach()
    assert abs(clean[0] - float(plain[a] - plain[f])) <= 1e-4


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-gpt2"])
@pytest.mark.parametrize("backend", ["transformer_lens", "nnsight"])
def test_batched_rows_equal_one_forward_per_row(load_backend, spec, backend):
    """Every method, positions and several prompts of two lengths: one unbatched forward per
    (prompt, set) with the same edits gives the same numbers."""
    model = InterpModel(load_backend(spec, backend))
    cases = [Case(PROMPT, " and", " the", corrupted=CORRUPTED),
             Case("A bird flew over a tree", " and", " the", corrupted="A fish flew over a tree",
                  positions=(2, -1)),
             Case("A bird flew", " over", " the", corrupted="A fish flew")]
    sets = [frozenset(), frozenset({Part(1, "head", 0)}),
            frozenset({Part(0, "mlp"), Part(2, "attn")}),
            complement({Part(1, "head", 2)}, model.info)]
    for method in ("zero", "mean", "resample"):
        parts = {p for s in sets for p in s}
        means = part_means(model, [c.prompt for c in cases], parts) if method == "mean" else None
        clean, values = ablated_metrics(model, cases, sets, method=method, metric="logit_diff",
                                        means=means)
        for i, case in enumerate(cases):
            tokens = model.tokens(case.prompt)
            pos = None if case.positions is None else tuple(
                sorted(p % tokens.length for p in case.positions))
            corrupted = model.run(case.corrupted, read={p.site for p in parts})
            for j, chosen in enumerate(sets):
                edits = []
                for part in chosen:
                    if method == "zero":
                        value = torch.zeros(())
                    elif method == "mean":
                        value = means[part]
                    else:
                        act = corrupted.acts[part.site][0]
                        act = act[:, part.head] if part.head is not None else act
                        value = act if pos is None else act[list(pos)]
                    edits.append(Edit(part.site, value, positions=pos, head=part.head))
                logits = model.forward(tokens, edits=edits).logits[0, -1]
                expected = float(logits[model.vocab.id(case.answer)]
                                 - logits[model.vocab.id(case.foil)])
                assert abs(values[i, j] - expected) <= 1e-4, (method, i, j)
            assert values[i, 0] == clean[i]  # ablating nothing is the clean run


def test_part_means_average_every_position_of_every_reference_prompt(load_backend):
    model = InterpModel(load_backend("tiny-random-llama"))
    prompts = ["The cat sat on the mat", "A bird flew", "A fish swam"]
    parts = [Part(1, "head", 3), Part(2, "mlp")]
    means = part_means(model, prompts, parts)
    runs = [model.cache(p) for p in prompts]
    heads = torch.cat([r["head_out", 1][0, :, 3] for r in runs])
    mlps = torch.cat([r["mlp_out", 2][0] for r in runs])
    assert torch.allclose(means[parts[0]], heads.mean(0), atol=1e-5)
    assert torch.allclose(means[parts[1]], mlps.mean(0), atol=1e-5)


def test_random_sets_are_seeded_and_match_the_set_kind_by_kind(load_backend):
    info = InterpModel(load_backend("tiny-random-llama")).info  # 3 layers, 4 heads
    chosen = {Part(2, "head", 1), Part(2, "head", 2), Part(0, "mlp")}
    sets = random_sets(chosen, 50, seed=7, info=info)
    assert sets == random_sets(chosen, 50, seed=7, info=info)
    assert sets != random_sets(chosen, 50, seed=8, info=info)
    for s in sets:
        assert sorted(p.kind for p in s) == ["head", "head", "mlp"]
    assert len({p for s in sets for p in s if p.kind == "head"}) == 12  # every head drawn
    assert complement(chosen, info) == frozenset(universe({"head", "mlp"}, info)) - chosen
    assert len(universe({"head", "attn", "mlp"}, info)) == 3 * 4 + 3 + 3


def test_parts_are_read_from_names_and_pairs():
    assert [str(parse_part(p)) for p in ("L9H6", "L-1.mlp", (3, 2), "L2.attn")] == \
        ["L9H6", "L-1.mlp", "L3H2", "L2.attn"]
    assert parse_part("L2.attn").site.component == "attn_out"
    with pytest.raises(SiteError, match=r"^cannot read '9.6' as a model part: write 'L9H6' \(a "
                                        r"head\), 'L9.attn' \(an attention layer\), 'L9.mlp' "
                                        r"\(an MLP\) or \(9, 6\)$"):
        parse_part("9.6")


def test_ablation_sweep_equals_one_ablation_per_part(load_backend):
    model = InterpModel(load_backend("tiny-random-gpt2", "nnsight"))
    sweep = model.ablation_sweep(PROMPT, answer=" the", foil=" a", method="zero")
    assert sweep.values.shape == (3, 4)
    for layer in range(3):
        for head in range(4):
            one = model.ablate(PROMPT, answer=" the", foil=" a", ablate=[(layer, head)],
                               method="zero")
            assert abs(one.ablated - sweep.values[layer, head]) <= 1e-4
            assert one.clean == pytest.approx(sweep.clean, abs=1e-5)
    best = sweep.top(2)
    assert [d for _, d in best] == sorted(sweep.drop.ravel(), reverse=True)[:2]
    mlps = model.ablation_sweep(PROMPT, answer=" the", kind="mlp", method="zero")
    assert mlps.values.shape == (3,) and mlps.metric == "logprob"


def test_controls_rank_the_set_with_ties_counting_half():
    result = AblationResult(model="toy", prompt="p", answer=" a", foil=" b", parts=("L1H0",),
                            method="mean", mode="necessity", clean=3.0, ablated=1.0,
                            controls=(3.0, 2.5, 1.0, 0.0), control_sets=(("L0H0",),) * 4)
    assert result.value == 2.0
    assert result.control_values.tolist() == [0.0, 0.5, 2.0, 3.0]
    assert result.beaten == pytest.approx((2 + 0.5) / 4)


TOY = AblationResult(
    model="toy", prompt="A B to", answer=" B", foil=" C", parts=("L1H0", "L2H3"),
    method="mean", mode="necessity", clean=4.0, ablated=3.5,
    controls=tuple(4.0 - (0.05 + 0.1 * i) for i in range(20)),  # drops 0.05, 0.15 .. 1.95
    control_sets=tuple((f"L0H{i % 4}", "L1H1") for i in range(20)))


def test_ablation_failure_texts():
    def judge(**kwargs):
        return AblationExpectation("A B to", answer=" B", foil=" C", ablate=["L2H3", "L1H0"],
                                   **kwargs).judge(TOY)

    assert judge(min_drop=0.4) is None
    assert judge(min_drop=1.0) == (
        "ablation: ablating L1H0, L2H3 (mean ablation) on 'A B to': the logit diff ' B' - ' C' "
        "goes from +4.000 to +3.500, a drop of 0.500, expected >= 1.0 (min_drop=1.0)")
    assert judge(min_drop=0.1, control=20) == (
        "ablation: ablating L1H0, L2H3 (mean ablation) on 'A B to': the logit diff ' B' - ' C' "
        "goes from +4.000 to +3.500, a drop of 0.500, which beats 25% of 20 random sets of 2 "
        "heads (ranks 16 of 21), expected to beat 95% (percentile=95): their 95th percentile "
        "is 1.855")
    assert judge(min_drop=0.1, control=20, percentile=25) is None  # beats exactly 25%
    keep = AblationResult(**{**TOY.__dict__, "mode": "sufficiency", "controls": (),
                             "control_sets": ()})
    text = AblationExpectation("A B to", answer=" B", foil=" C", keep=["L1H0", "L2H3"],
                               min_faithfulness=0.9).judge(keep)
    assert text == (
        "ablation: ablating all but L1H0, L2H3 (mean ablation) on 'A B to': the logit diff "
        "' B' - ' C' goes from +4.000 to +3.500, a faithfulness of 0.875, expected >= 0.9 "
        "(min_faithfulness=0.9)")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({}, "pass ablate=[parts] (they are necessary) or keep=[parts] (they are sufficient), one "
         "of them"),
    ({"ablate": ["L1H0"], "keep": ["L1H0"]}, "pass ablate=[parts] (they are necessary) or "
                                             "keep=[parts] (they are sufficient), one of them"),
    ({"ablate": "L1H0", "min_drop": 1}, "ablate must be a non-empty list of parts like "
                                        "['L9H6', 'L9.attn', 'L9.mlp'], got 'L1H0'"),
    ({"ablate": ["L1 H0"], "min_drop": 1}, "ablate: cannot read 'L1 H0' as a model part: write "
                                           "'L9H6' (a head), 'L9.attn' (an attention layer), "
                                           "'L9.mlp' (an MLP) or (9, 6)"),
    ({"ablate": ["L1H0"]}, "no check given: pass min_drop and/or max_drop"),
    ({"keep": ["L1H0"], "min_drop": 1}, "min_drop= applies to ablate=, not keep=: use "
                                        "min_faithfulness or max_faithfulness"),
    ({"ablate": ["L1H0"], "min_drop": 1, "method": "resample"},
     "method='resample' takes each part's value from corrupted=: pass a corrupted prompt of "
     "the same length"),
    ({"ablate": ["L1H0"], "min_drop": 1, "method": "zero", "reference": ["a"]},
     "reference= is what mean ablation averages over, but method='zero'"),
    ({"ablate": ["L1H0"], "max_drop": 1, "control": 10},
     "control=N checks that the set beats random sets: pass min_drop="),
    ({"ablate": ["L1H0"], "min_drop": 1, "control": 10, "percentile": 100},
     "percentile must be between 0 and 100, got 100"),
    ({"ablate": ["L1H0"], "min_drop": 1, "method": "mean", "reference": "nope:3"},
     "reference must be a list of prompts or a generator like 'ioi:64' (ioi, capitals), got "
     "'nope:3'"),
])
def test_ablation_expectation_combinations(kwargs, message):
    with pytest.raises(InterpError) as info:
        AblationExpectation("The cat sat", answer=" on", **kwargs)
    assert str(info.value) == message


def test_bad_ablation_marker_is_a_collection_error(pytester):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, 'ablation("The cat sat", answer=" on", ablate=["L1H0"])',
                            "no check given: pass min_drop and/or max_drop")


@pytest.mark.parametrize(("marker", "message"), [
    ('ablation("The cat sat", answer=" on", ablate=["L3H0"], min_drop=1)',
     "layer 3 is out of range for tiny-random-llama with 3 layers: use 0..2 (or -3..-1 from "
     "the end)"),
    ('ablation("The cat sat", answer=" on", ablate=["L1H4"], min_drop=1)',
     "head 4 is out of range for tiny-random-llama with 4 heads: use 0..3 (or -4..-1 from "
     "the end)"),
    ('ablation("The cat sat", answer=" on", ablate=["L1H0"], min_drop=1, method="resample", '
     'corrupted="The big dog sat")',
     "clean and corrupted prompts must tokenize to the same length, got *"),
])
def test_ablation_marker_that_needs_the_model_to_check_fails_its_test(pytester, marker,
                                                                       message):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, marker, message)


def test_ablation_marker_is_listed(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines([f"{ABLATION_USAGE}: assert parts are necessary*"])


def test_ablation_marker_passes_fails_and_snapshots_on_a_tiny_model(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.ablation("The cat sat on the", answer=" mat", foil=" rug",
                              ablate=["L2.mlp", "L1H1"], max_drop=100)
        def test_pass():
            pass

        @pytest.mark.ablation("The cat sat on the", answer=" mat", ablate=["L2.mlp"],
                              min_drop=100, method="zero")
        def test_fail():
            pass

        def test_snapshot(interp_model, interp_snapshot):
            result = interp_model.ablate("The cat sat on the", answer=" mat", foil=" rug",
                                         ablate=["L1H1"], control=3)
            assert result == interp_snapshot
    """)
    result = pytester.runpytest("--snapshot-update")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "ablation: ablating L2.mlp (zero ablation) on 'The cat sat on the': the logprob of "
        "' mat' goes from * to *, a drop of *, expected >= 100 (min_drop=100)"])
    stored = (pytester.path / "__snapshots__" / "test_m.interp").read_text()
    assert '"ablated": "L1H1"' in stored and stored.count('"ablated": ') == 4
    result = pytester.runpytest("-k", "snapshot")
    result.assert_outcomes(passed=1)
