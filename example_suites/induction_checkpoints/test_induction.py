"""When does the induction head form? Run on every checkpoint of train.py in one session:

    pytest example_suites/induction_checkpoints --interp-model='CKPT/step_*' \\
        --interp-baseline=CKPT/step_00000 --interp-report=report.html

Each test runs on each checkpoint (in step order). The marker fails until an induction head
has formed; the attention summary fails on every checkpoint whose heads changed from the
baseline's beyond the noise floor, naming the heads and their new labels. The report's trend
chart shows the induction score per step, and its grid which checkpoints fail. To find the
step where the head formed without running them all:

    python -m pytest_interp bisect --models 'CKPT/step_*' --find pass -- \\
        example_suites/induction_checkpoints -k induction_head
"""

from __future__ import annotations

import pytest


@pytest.mark.attention(kind="induction", min_score=0.5)
def test_an_induction_head_exists():
    """Some head attends from a repeated token to the token after its first occurrence."""


def test_attention_summary(interp_model):
    """Every head's scores: with --interp-baseline, compared head by head with the baseline
    checkpoint's (a failure names the heads that changed)."""
    interp_model.attention()
