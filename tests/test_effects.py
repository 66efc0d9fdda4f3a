"""A ratio needs something to divide by: recovery (clean - corrupted) and faithfulness
(clean) claims with too small an effect are INCONCLUSIVE, naming the effect; a dataset
leaves such rows out of its statistic and says how many; --interp-controls judges each
marker on its own."""

from __future__ import annotations

import pytest

from pytest_interp.metrics import MIN_EFFECT
from pytest_interp.model import InterpModel

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
IOI = {"answer": " Mary", "foil": " John"}


@pytest.fixture(scope="module")
def tiny(load_backend) -> InterpModel:
    return InterpModel(load_backend("tiny-random-llama"))


def test_the_default_effects_are_per_metric():
    assert MIN_EFFECT == {"logit_diff": 1.0, "logprob": 1.0, "kl": 0.5, "prob": 0.1,
                          "rank": 1.0}


def test_a_recovery_claim_with_no_effect_is_inconclusive(pytester, tiny):
    # A random model prefers the answer (almost) equally in both runs.
    result = tiny.activation_patching(CLEAN, CORRUPTED, **IOI, layers=[1])
    assert abs(result.effect) < 1
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.activation_patching({CLEAN!r}, {CORRUPTED!r}, answer=" Mary",
                                         foil=" John", layer=1, position=-5, min_recovery=0.5)
        def test_single():
            pass

        @pytest.mark.activation_patching(prompts="ioi:8", layer=1, position="S2",
                                         min_recovery=0.5)
        def test_dataset():
            pass
    """)
    out = pytester.runpytest()
    outcomes = out.parseoutcomes()
    assert outcomes.get("inconclusive") == 2 and "passed" not in outcomes, outcomes
    out.stdout.fnmatch_lines([
        "activation_patching: no effect to recover: the clean logit diff is "
        f"{result.clean_logit_diff:+.3f} and the corrupted {result.corrupted_logit_diff:+.3f}, "
        f"an effect of {result.effect:+.3f}, below min_effect=1; recovery would divide by "
        "it: pick prompts on which the model behaves differently, or lower min_effect=",
        "activation_patching over ioi:8: no effect to divide by: the mean |clean - corrupted| "
        "metric is *, 95% CI [[]*, *[]] (n=8), below min_effect=1 (8 of 8 rows below it): "
        "INCONCLUSIVE; pick prompts on which the model behaves differently, or lower "
        "min_effect=",
        "  per prompt, worst first (all):",
        "*   no effect  'Then, Jane and Kevin w...the hospital. Kevin gave a snack to'*",
    ])


def test_a_dataset_leaves_out_rows_without_an_effect_and_says_how_many(pytester, tiny):
    from pytest_interp.datasets import ioi

    rows = ioi(8)
    effects = sorted(abs(tiny.activation_patching(r["clean"], r["corrupted"],
                                                  answer=r["answer"], foil=r["foil"],
                                                  layers=[1]).effect) for r in rows)
    floor = (effects[0] + effects[1]) / 2  # one row below it; the mean effect well above
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.activation_patching(prompts="ioi:8", layer=1, position="S2",
                                         min_recovery=100, min_effect={floor!r})
        def test_dataset():
            pass
    """)
    out = pytester.runpytest()
    out.assert_outcomes(failed=1)
    out.stdout.fnmatch_lines([
        "activation_patching over ioi:8: mean recovery is *, 95% CI [[]*, *[]] (*, n=7), "
        "expected min_recovery=100 (1 of 8 rows left out: their |clean - corrupted| metric is "
        f"below min_effect={floor:g}): the whole interval is on the wrong side",
    ])


def test_faithfulness_with_no_clean_effect_is_inconclusive(pytester, tiny):
    clean = tiny.logit_diff(CLEAN, " Mary", " John")
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.ablation({CLEAN!r}, answer=" Mary", foil=" John", keep=["L2.mlp"],
                              method="zero", min_faithfulness=0.8)
        def test_keep():
            pass

        @pytest.mark.ablation({CLEAN!r}, answer=" Mary", foil=" John", ablate=["L2.mlp"],
                              method="zero", max_drop=100)
        def test_drop_needs_no_effect():
            pass
    """)
    out = pytester.runpytest("-v")
    out.stdout.fnmatch_lines([
        "test_m.py::test_keep INCONCLUSIVE*",
        "test_m.py::test_drop_needs_no_effect PASSED*",
        f"ablation: no effect to keep: the clean logit diff ' Mary' - ' John' on {CLEAN!r} is "
        f"{clean:+.3f}, below min_effect=1; faithfulness (ablated / clean) would divide by it: "
        "pick prompts on which the model shows the behaviour, or lower min_effect=",
    ])


def test_bad_min_effect_is_a_collection_error(pytester):
    from .pytester_helpers import assert_collection_error

    ini(pytester, model="tiny-random-llama")
    assert_collection_error(
        pytester, f'activation_patching({CLEAN!r}, {CORRUPTED!r}, answer=" Mary", foil=" John", '
                  'layer=0, position=0, min_recovery=0.5, min_effect=-1)',
        "min_effect is the least |clean - corrupted| to divide by, >= 0, got -1")


def test_controls_judge_each_marker_on_its_own(pytester, tiny):
    value = tiny.logit_diff("The cat sat on the", " mat", " rug")
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" rug", min=-1000)
        @pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" dog",
                                min=-1000)
        @pytest.mark.logit_diff("The cat sat on the", answer=" mat", foil=" rug",
                                min={value - 1e-3!r}, max={value + 1e-3!r})
        def test_one_of_three_learned():
            pass
    """)
    out = pytester.runpytest("--interp-controls")
    out.assert_outcomes(passed=1, warnings=1)
    out.stdout.fnmatch_lines([
        "*VacuousWarning: VACUOUS: @pytest.mark.logit_diff(answer=' mat', foil=' rug'), "
        "@pytest.mark.logit_diff(answer=' mat', foil=' dog') also passed on a randomly "
        "re-initialised tiny-random-llama (2 of 3 markers) (--interp-controls): they do not "
        "depend on what the model learned; tighten their bounds",
        "  VACUOUS test_m.py::test_one_of_three_learned",
    ])
