"""When does the induction head form? Run on every checkpoint of train.py in one session:

    pytest example_suites/induction_checkpoints --interp-model='CKPT/step_*' \\
        --interp-baseline=CKPT/step_00000 --interp-report=report.html

Each test runs on each checkpoint (in step order). The markers fail until an induction head
and the small circuit that carries it have formed; the attention summary fails on every
checkpoint whose heads changed from the baseline's beyond the noise floor, naming the heads
and their new labels. The report's trend chart shows the induction score per step, and its
grid which checkpoints fail. To find the step where the head formed without running them
all:

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


# A random span of 20 words, then its first 12 again: an induction circuit predicts the 13th.
SPAN = ("w432 w197 w388 w455 w215 w20 w132 w494 w261 w248 w207 w470 w401 w424 w155 w495 w244 "
        "w183 w298 w456")
REPEAT = "w432 w197 w388 w455 w215 w20 w132 w494 w261 w248 w207 w470"
OTHER = ("w464 w111 w258 w71 w144 w71 w386 w48 w316 w409 w128 w505 w465 w272 w503 w361 w414 "
         "w308 w461 w75")


@pytest.mark.circuit(f"{SPAN} {REPEAT}", corrupted=f"{OTHER} {REPEAT}", answer="w401",
                     metric="logprob", method="eap-ig", top_n=10, min_faithfulness=0.5,
                     control=20)
def test_ten_edges_carry_induction():
    """The ten strongest edges (EAP-IG) alone recover half of what the first span adds to
    predicting the next word, and more than 95% of 20 random ten-edge circuits. With
    --interp-baseline, the report charts each checkpoint's circuit against the baseline's
    (Jaccard of the edges, rank correlation of all scores)."""
