"""When does the induction head form? Run on each checkpoint of train.py:

    pytest example_suites/induction_checkpoints --interp-model=CKPT/step_00000 --snapshot-update
    pytest example_suites/induction_checkpoints --interp-model=CKPT/step_00200

The first pins the early checkpoint's attention summary; on a later checkpoint the snapshot
diff names the heads that changed and their new labels. (Write --interp-model=PATH: pytest
takes a separate path argument into account when it picks the rootdir.)
"""

from __future__ import annotations

import pytest


@pytest.mark.attention(kind="induction", min_score=0.5)
def test_an_induction_head_exists():
    """Some head attends from a repeated token to the token after its first occurrence."""


def test_attention_summary(interp_model, interp_snapshot):
    assert interp_snapshot == interp_model.attention()
