"""--interp-baseline on SmolLM2 against a copy with one head zeroed: the same model-terms
diff a snapshot written on SmolLM2 gives; and SmolLM2 against itself passes."""

from __future__ import annotations

import pytest

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

# L23H3 has the largest head_out patching recovery on IOI (see test_ablation_smollm2).
LAYER, HEAD = 23, 3
PROMPT = "When Mary and John went to the store, John gave a drink to"
SNAPSHOT = f"""
    def test_lens(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.lens({PROMPT!r})
"""
BASELINE = f"""
    def test_lens(interp_model):
        interp_model.lens({PROMPT!r})
"""


@pytest.fixture(scope="module")
def zeroed(load_raw_hf, tmp_path_factory):
    """SmolLM2 saved with head L23H3's output projection zeroed."""
    raw = load_raw_hf("smollm2-135m")
    config = raw.model.config
    d_head = config.hidden_size // config.num_attention_heads
    state = {k: v.clone() for k, v in raw.model.state_dict().items()}
    state[f"model.layers.{LAYER}.self_attn.o_proj.weight"][:, HEAD * d_head:
                                                            (HEAD + 1) * d_head] = 0
    path = tmp_path_factory.mktemp("zeroed") / "smollm2-L23H3-zeroed"
    raw.model.save_pretrained(path, state_dict=state)
    raw.tokenizer.save_pretrained(path)
    return path


def _changes(text: str, first: str) -> list[str]:
    """The change lines after the line starting ``first``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    changes = []
    for line in lines[start + 1:]:
        if line.startswith("  (the weights"):
            continue  # what changed besides the numbers (a snapshot's failure says it)
        if not line.startswith("  L") and not line.startswith("  layer"):
            break
        changes.append(line.strip())
    return changes


@pytest.mark.slow
def test_baseline_on_smollm2_gives_the_snapshot_diff(pytester, zeroed):
    ini(pytester, model="smollm2-135m")
    pytester.makepyfile(test_snapshot=SNAPSHOT, test_baseline=BASELINE)
    pytester.runpytest("test_snapshot.py", "--snapshot-update").assert_outcomes(passed=1)
    snapshot = pytester.runpytest("test_snapshot.py", f"--interp-model={zeroed}")
    snapshot.assert_outcomes(failed=1)
    baseline = pytester.runpytest("test_baseline.py", f"--interp-model={zeroed}",
                                  "--interp-baseline=smollm2-135m")
    baseline.assert_outcomes(failed=1)
    first = "lens of smollm2-L23H3-zeroed changed from baseline smollm2-135m beyond the noise " \
            "floor (tolerances prob 0.02, logit 0.1, recovery 0.05 and the baseline's measured " \
            "floors), "
    assert first in baseline.stdout.str()
    changes = _changes(baseline.stdout.str(), first)
    assert changes[0] == "layer 23 pos -1 (' to'): P(' the') 0.63 -> 0.53"
    assert changes == _changes(snapshot.stdout.str(), "lens of smollm2-L23H3-zeroed changed "
                                                      "beyond the noise floor")
    pytester.runpytest("--interp-baseline=smollm2-135m").assert_outcomes(passed=2)
