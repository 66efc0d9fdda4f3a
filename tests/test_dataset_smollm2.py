"""Dataset verdicts on SmolLM2 over 64 IOI prompts: PASS, FAIL and INCONCLUSIVE, for a logit
difference and for an activation-patching recovery, with their exact failure text."""

from __future__ import annotations

import pytest

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

LD_HEAD = ("logit_diff over ioi:64: mean logit diff is 4.934, 95% CI [[]4.443, 5.429[]] "
           "(percentile bootstrap, 9999 resamples, n=64), expected ")
LD_ROWS = [
    "  per prompt, worst first (10 of 64; -vv shows all):",
    "     row  logit diff  prompt",
    "      44       0.586  'Friends Joe and Sarah ...rink at the store. Sarah gave it to'",
    "      29       1.221  'Friends Adam and Paul ...ce at the hospital. Adam gave it to'",
]
PATCH_HEAD = ("activation_patching over ioi:64: mean recovery is 0.910, 95% CI [[]0.898, 0.922[]] "
              "(percentile bootstrap, 9999 resamples, n=64), expected ")
PATCH_ROWS = [
    "  per prompt, worst first (10 of 64; -vv shows all):",
    "     row    recovery  prompt",
    "      58       0.763  'The store Anna and Gra...to had a computer. Grace gave it to'",
    "      38       0.778  'While Mary and Kate we...staurant, Kate gave a basketball to'",
]
WRONG_SIDE = ": the whole interval is on the wrong side"
STRADDLES = (": INCONCLUSIVE, the interval straddles the bound; add prompts or move the "
             "bound")


@pytest.mark.slow
def test_ioi_dataset_verdicts_on_smollm2(pytester):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_m="""
        import pytest

        CELL = dict(prompts="ioi:64", layer=-1, position="END")

        @pytest.mark.logit_diff(prompts="ioi:64", min=3)
        def test_ld_pass():
            pass

        @pytest.mark.logit_diff(prompts="ioi:64", min=6)
        def test_ld_fail():
            pass

        @pytest.mark.logit_diff(prompts="ioi:64", min=5)
        def test_ld_inconclusive():
            pass

        @pytest.mark.activation_patching(**CELL, min_recovery=0.8)
        def test_patch_pass():
            pass

        @pytest.mark.activation_patching(**CELL, min_recovery=0.95)
        def test_patch_fail():
            pass

        @pytest.mark.activation_patching(**CELL, min_recovery=0.91)
        def test_patch_inconclusive():
            pass
    """)
    result = pytester.runpytest("-v")
    result.stdout.fnmatch_lines([
        "test_m.py::test_ld_pass PASSED*", "test_m.py::test_ld_fail FAILED*",
        "test_m.py::test_ld_inconclusive INCONCLUSIVE*", "test_m.py::test_patch_pass PASSED*",
        "test_m.py::test_patch_fail FAILED*", "test_m.py::test_patch_inconclusive INCONCLUSIVE*",
        "*_ test_ld_fail _*", LD_HEAD + "min=6" + WRONG_SIDE, *LD_ROWS,
        "*_ test_patch_fail _*", PATCH_HEAD + "min_recovery=0.95" + WRONG_SIDE, *PATCH_ROWS,
        "*= INCONCLUSIVE =*",
        "*_ test_ld_inconclusive _*", LD_HEAD + "min=5" + STRADDLES, *LD_ROWS,
        "*_ test_patch_inconclusive _*", PATCH_HEAD + "min_recovery=0.91" + STRADDLES,
        *PATCH_ROWS,
        "*= 2 failed, 2 passed, 2 inconclusive in *",
    ])
    # the three patching markers hold one dataset to different bounds: it runs once
    assert result.ret == pytest.ExitCode.TESTS_FAILED
