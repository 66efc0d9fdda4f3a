"""The feature and sae_fidelity markers through pytest: passes, exact failure texts, datasets,
snapshots, and bad arguments (at collection, or when the test runs)."""

from __future__ import annotations

import pytest
import torch

from pytest_interp.kinds.features import FeatureExpectation
from pytest_interp.kinds.sae_fidelity import SaeFidelityExpectation
from pytest_interp.model import InterpModel

from .pytester_helpers import assert_collection_error, assert_fails_when_run, ini
from .test_features import write_sae

pytest_plugins = ["pytester"]

PROMPT = "The cat sat on the mat"
TEXT = "When Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def llama(load_backend):
    return InterpModel(load_backend("tiny-random-llama"))


@pytest.fixture
def sae(pytester, llama):
    write_sae(pytester.path / "sae", llama.info.d_model)
    return "sae"


def test_feature_markers_pass_and_fail_with_the_latent_its_label_and_what_fires(
        pytester, llama, sae):
    result = FeatureExpectation(PROMPT, sae=str(pytester.path / sae), feature=0, min=0.0
                                ).run(llama)
    (top, act, _), (second, _, _) = result.top(-1, 2)
    silent = next(i for i in range(96) if result.activation(i) == 0)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature={top}, min={act / 2})
        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature={top}, top_k=1)
        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature={silent}, max=0)
        def test_pass():
            pass

        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature={silent}, min=0.5)
        def test_silent():
            pass

        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature={second}, position=-1, top_k=1)
        def test_second():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(passed=1, failed=2)
    rows = [f"    {latent:>7}  {value:8.3f}  {label}" for latent, value, label in result.top()]
    out.stdout.fnmatch_lines([
        f"feature: {result.named(silent)} of {sae} at position -1 (' mat') of {PROMPT!r} is "
        "0.000, expected >= 0.5 (min=0.5)",
        "  the strongest latents there (latent, activation, label):", *rows])
    second_act = result.activation(second)
    out.stdout.fnmatch_lines([
        f"feature: {result.named(second)} of {sae} at position -1 (' mat') of {PROMPT!r} is "
        f"{second_act:.3f}, ranked 2, expected among the top 1"])
    assert result.label(top)  # each latent shown has its decoder direction's top tokens


def test_a_labels_file_names_the_latents(pytester, llama, sae):
    (pytester.path / "labels.json").write_text('{"0": "cats on mats"}')
    result = llama.features(PROMPT, sae=str(pytester.path / sae),
                            labels=str(pytester.path / "labels.json"))
    assert result.labels.get(0, "cats on mats") == "cats on mats"
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.feature({PROMPT!r}, sae={sae!r}, feature=0, min=1e9, labels="labels.json")
        def test_x():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(failed=1)
    out.stdout.fnmatch_lines(["feature: latent 0 (cats on mats) of *"])


def test_sae_fidelity_markers_and_a_dataset_pool_their_rows(pytester, llama, sae):
    one = SaeFidelityExpectation(TEXT, sae=str(pytester.path / sae), max_fvu=0.01).run(llama)
    ini(pytester, model="tiny-random-llama")
    (pytester.path / "texts.txt").write_text(f"{TEXT}\n{PROMPT} and then it slept\n")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.sae_fidelity({TEXT!r}, sae={sae!r}, max_fvu=1e6, l0=(8, 8),
                                  max_delta_ce=100)
        def test_pass():
            pass

        @pytest.mark.sae_fidelity({TEXT!r}, sae={sae!r}, max_fvu=0.01, l0=(1, 4))
        def test_fail():
            pass

        @pytest.mark.sae_fidelity(prompts="texts.txt", sae={sae!r}, max_delta_ce=100,
                                  max_fvu=0.01)
        def test_dataset():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(passed=1, failed=2)
    out.stdout.fnmatch_lines([
        f"sae_fidelity: {sae} at resid_post@1 on {TEXT!r}: the FVU is {one.fvu:.4f}, above "
        "max_fvu=0.01; the L0 is 8.0, outside l0=(1, 4)",
        f"  FVU {one.fvu:.4f}, L0 8.0; loss clean {one.ce_clean:.4f}, spliced "
        f"{one.ce_spliced:.4f} (delta CE {one.delta_ce:+.4f}, KL {one.kl:.4f}), with the error "
        f"term {one.ce_with_error:.4f} ({one.positions} predictions)"])
    out.stdout.fnmatch_lines([f"sae_fidelity over texts.txt (2 prompts): {sae} at resid_post@1 "
                              "over 2 texts: the FVU is *, above max_fvu=0.01"])


def test_features_snapshot_and_a_noise_swap_is_not_a_change(pytester, sae):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        def test_snap(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.features({PROMPT!r}, sae={sae!r})
    """)
    first = pytester.runpytest("--snapshot-update")
    first.assert_outcomes(passed=1)
    stored = next((pytester.path / "__snapshots__").glob("*"))
    text = stored.read_text()
    assert '"kind": "features"' in text and '"top": [["' in text
    again = pytester.runpytest()
    again.assert_outcomes(passed=1)


@pytest.mark.parametrize(("marker", "message"), [
    ('feature("a b", sae="x", feature=1)', "no check given: pass min= (it fires), max= "
                                           "(max=0: it stays silent) and/or top_k= (among the "
                                           "strongest)"),
    ('feature("a b", sae="x", feature=-1, min=1)', "feature must be a latent number >= 0, got -1"),
    ('feature("a b", sae="x", feature=1, top_k=0)', "top_k must be an int >= 1, got 0"),
    ('sae_fidelity("a b", sae="x")', "no check given: pass max_delta_ce=, max_fvu= and/or "
                                     "l0=(low, high)"),
    ('sae_fidelity("a b", sae="x", l0=(5, 2))', "l0 must be a pair (low, high) with 0 <= low "
                                                "<= high, got (5, 2)"),
])
def test_bad_feature_markers_fail_collection(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


def test_what_needs_the_model_fails_the_test_alone(pytester, sae):
    ini(pytester, model="tiny-random-llama")
    assert_fails_when_run(pytester, f'feature("The cat", sae={sae!r}, feature=96, min=1)',
                          f"latent 96 is not one of SAE '{sae}' (topk k=8, 96 "
                          "latents at resid_post@1)'s: use 0..95")


def test_a_latents_decoder_direction_is_a_steering_vector(pytester, llama, sae):
    from pytest_interp.dictionaries.formats import load_dictionary

    vector = llama.load_vector(f"sae:{pytester.path / sae}#3")
    assert torch.equal(vector, load_dictionary(str(pytester.path / sae)).weights["W_dec"][3])
    steered = llama.steer("The cat sat on the", f"sae:{pytester.path / sae}#3", layer=1,
                          site="resid_post", coef=[0.0, 20.0], target=" mat")
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.steering("The cat sat on the", vector="sae:{sae}#3", layer=1,
                              site="resid_post", coef=20.0, target=" mat",
                              min_delta={float(steered.delta[-1]) - 1e-3:.6f})
        def test_steer():
            pass

        @pytest.mark.steering("The cat sat on the", vector="sae:{sae}", layer=1, coef=1.0,
                              target=" mat", min_delta=0)
        def test_no_latent():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(passed=1, failed=1)
    out.stdout.fnmatch_lines(["*a latent's vector is sae:PATH#LATENT (e.g. "
                              "sae:sae/resid_post_15#4512), got 'sae:sae'"])


def test_a_features_snapshot_is_tie_aware():
    """Two latents that swap the lead within the tolerance are noise; a new leader far ahead,
    or a latent gone from the list, is a change in model terms."""
    from pytest_interp.kinds.features import latent_changes

    old = [["541", 1.0], ["2953", 0.99], ["3699", 0.5]]
    swapped = [["2953", 1.0], ["541", 0.995], ["3699", 0.5]]
    (noise,) = latent_changes("position 5", old, swapped, 0.02)
    assert noise.noise and noise.text == ("position 5: strongest latent 541 -> 2953, a near-tie "
                                          "(within 0.02)")
    replaced = [["77", 1.0], ["2953", 0.5], ["3699", 0.4]]
    texts = [c.text for c in latent_changes("position 5", old, replaced, 0.02)]
    assert texts == ["position 5: strongest latent 541 -> 77",
                     "position 5: latent 541 (1.00 of the strongest) left the top 3",
                     "position 5: latent 2953 0.99 -> 0.50 of the strongest",
                     "position 5: latent 3699 0.50 -> 0.40 of the strongest"]
    assert latent_changes("position 5", old, old, 0.02) == []


def test_the_ablation_marker_ablates_latents_with_sae(pytester, llama, sae):
    from pytest_interp.kinds.ablation import AblationExpectation

    path = str(pytester.path / sae)
    top = [i for i, _ in llama.features(TEXT, sae=path).active(-1)[:3]]
    result = AblationExpectation(TEXT, answer=" Mary", foil=" John", sae=path, ablate=top,
                                 method="zero", min_drop=-1e9).run(llama)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.ablation({TEXT!r}, answer=" Mary", foil=" John", sae={sae!r},
                              ablate={top}, method="zero", min_drop={result.value - 1:.4f})
        def test_pass():
            pass

        @pytest.mark.ablation({TEXT!r}, answer=" Mary", foil=" John", sae={sae!r},
                              ablate={top}, method="zero", min_drop={result.value + 1:.4f})
        def test_fail():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(passed=1, failed=1)
    names = ", ".join(f"latent {i}" for i in sorted(top))
    out.stdout.fnmatch_lines([f"ablation: ablating {names} (zero ablation) on {TEXT!r}: the "
                              f"logit diff ' Mary' - ' John' goes from {result.clean:+.3f} to "
                              f"{result.ablated:+.3f}, a drop of {result.value:.3f}, expected "
                              f">= {result.value + 1:.4f} (min_drop={result.value + 1:.4f})"])


@pytest.mark.parametrize(("marker", "message"), [
    ('ablation("a b", answer=" b", sae="x", keep=[1], min_faithfulness=0.5)',
     "keep= with sae= would ablate every other latent: name the latents to ablate with "
     "ablate=[...]"),
    ('ablation("a b", answer=" b", sae="x", ablate=["L1H0"], min_drop=0)',
     "with sae=, ablate must be a non-empty list of latent numbers like [541, 1749], got "
     "['L1H0']"),
    ('ablation("a b", answer=" b", sae="x", ablate=[3], method="resample", corrupted="a c", '
     'min_drop=0)', "a latent is ablated to zero or its mean: method='zero' or 'mean', not "
                    "'resample'"),
])
def test_bad_latent_ablations_fail_collection(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)
