"""``python -m pytest_interp init``: bounds, the written suite, CLI errors, and (slow) a suite
written for SmolLM2 that passes on it and on a benign variant and fails on real damage."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_interp import init
from pytest_interp.init import Findings, fraction_bound, lower_bound, upper_bound

pytest_plugins = ["pytester"]

RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")


def lint(folder: Path) -> None:
    """ruff (pycodestyle with the blank-line rules, pyflakes, isort, bugbear) finds nothing."""
    assert RUFF, "ruff is a test dependency"
    done = subprocess.run([RUFF, "check", "--no-cache", "--isolated", "--preview",
                           "--line-length", "100", "--select", "E,F,W,I,B,UP", "."],
                          cwd=folder, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def interval(value: float, low: float, high: float, unit: str) -> dict[str, float]:
    return {"value": value, "low": low, "high": high, "min": lower_bound(low, value, unit),
            "max": upper_bound(high, value, unit)}


def fraction(passed: int, n: int, low: float, high: float) -> dict[str, float]:
    return {"value": passed / n, "low": low, "high": high, "passed": passed, "n": n,
            "min": fraction_bound(low)}


def smollm2_findings() -> Findings:
    """What exploring SmolLM2-135M found (measured 2026-11-29), as template values."""
    found = Findings("smollm2-135m", "SmolLM2-135M", 30)
    fact = {"prompt": "The capital of France is", "target": " Paris", "expect": " Paris",
            "emerges_at": 28}
    found.files["facts.jsonl"] = json.dumps(fact) + "\n"
    found.files["reviews.txt"] = "I think this movie is\n"
    found.parts["facts"] = {
        "n": 70, "total": 111, "source": "the built-in capitals", "first": fact, "by": 28,
        "next_token": fraction(70, 70, 0.95, 1.0),
        "emergence": fraction(60, 70, 0.74, 0.92), "prob": interval(0.43, 0.38, 0.47, "unit")}
    found.parts["ioi"] = {
        "source": "ioi:64", "n": 64, "diff": interval(4.93, 4.44, 5.43, "logit"), "swept": 16,
        "cross": 24, "s2_gone": 21, "late": {"layer": 29, **interval(0.91, 0.9, 0.92, "unit")},
        "mid": {"layer": 18, **interval(0.96, 0.94, 0.97, "unit")},
        "early": {"layer": 20, **interval(0.13, 0.10, 0.15, "unit")},
        "clean": "Then, Jane and Kevin went to the hospital. Kevin gave a snack to",
        "corrupted": "Then, Jane and Kevin went to the hospital. Tom gave a snack to",
        "answer": " Jane", "foil": " Kevin"}
    found.parts["heads"] = {
        "induction": [{"layer": 18, "head": 6, "score": 0.80, "min": lower_bound(.8, .8, "unit")}],
        "previous_token": [{"layer": 16, "head": 0, "score": 0.88,
                            "min": lower_bound(.88, .88, "unit")}]}
    found.parts["steering"] = {
        "layer": 27, "up": interval(8.73, 8.33, 9.11, "logit"),
        "down": interval(-5.41, -5.82, -4.90, "logit"), "control": fraction(8, 8, 0.68, 1.0),
        "contrast": init.CONTRAST, "first": "I think this movie is", "n": 8}
    return found


def test_bounds_sit_a_documented_margin_beyond_the_interval_rounded_outwards():
    # 25% of the value beats the absolute step: 0.9 - 0.2275 = 0.6725 -> 0.67.
    assert lower_bound(0.9, 0.91, "unit") == 0.67
    # the absolute step beats 25% of a small value: 0.15 + 0.1 -> 0.25.
    assert upper_bound(0.15, 0.13, "unit") == 0.25
    # logits: 4.44 - 1.2325 -> 3.2 (one decimal, down); -4.90 + 1.3525 -> -3.5 (up).
    assert lower_bound(4.44, 4.93, "logit") == 3.2
    assert upper_bound(-4.90, -5.41, "logit") == -3.5
    assert lower_bound(0.3, 0.3, "logit") == -0.2  # at least 0.5 for logits
    assert fraction_bound(0.95) == 0.85
    assert fraction_bound(0.05) == 0.0  # never below 0


def test_the_written_suite_is_ruff_clean_and_its_markers_collect(pytester: pytest.Pytester):
    files = init.render(smollm2_findings())
    assert sorted(files) == ["facts.jsonl", "pytest.ini", "reviews.txt", "test_interp.py",
                             "test_snapshots.py"]
    for name, text in files.items():
        (pytester.path / name).write_text(text)
    lint(pytester.path)
    text = files["test_interp.py"]
    assert "@pytest.mark.logit_diff(prompts=IOI, min=3.2)\n" in text
    assert "# measured: mean logit diff 4.93, 95% CI [4.44, 5.43]\n" in text
    assert ("@pytest.mark.attention(kind=\"induction\", head=(18, 6), min_score=0.6)  "
            "# measured 0.80\n") in text
    assert '"""Induction heads: L18H6. Previous-token heads: L16H0."""' in text
    # --strict-markers and the plugin check every marker's arguments at collection.
    result = pytester.runpytest("--collect-only", "-q", "--interp-model=tiny-random-llama")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["9 tests collected*"])


def test_init_names_the_fix_for_bad_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        init.main(["--model", "tiny-random-llama", "--out", str(tmp_path), "--parts", "ioi,x"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.endswith(
        "python -m pytest_interp init: error: --parts takes some of facts, ioi, heads, "
        "steering, got 'ioi,x'\n")
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit):
        init.main(["--model", "tiny-random-llama", "--out", str(tmp_path)])
    assert capsys.readouterr().err.endswith(
        f"error: {tmp_path} is not empty: choose another --out or pass --force\n")


def test_init_names_the_bad_fact_before_loading_the_model(tmp_path, capsys):
    facts = tmp_path / "facts.jsonl"
    facts.write_text('{"prompt": "Water boils at", "target": " 100"}\n\n{"prompt": "x"}\n')
    out = tmp_path / "out"
    assert init.main(["--model", "no-such-model", "--out", str(out), "--facts",
                      str(facts)]) == 2
    assert capsys.readouterr().err == (
        f"init: {facts}:3: a fact is a JSON object with 'prompt' and 'target' (the expected "
        "next token), got '{\"prompt\": \"x\"}'\n")
    facts.write_text("not json\n")
    assert init.main(["--model", "no-such-model", "--out", str(out), "--facts",
                      str(facts)]) == 2
    assert capsys.readouterr().err.endswith("got 'not json'\n")
    assert init.main(["--model", "no-such-model", "--out", str(out), "--facts",
                      str(tmp_path / "missing.jsonl")]) == 2
    assert capsys.readouterr().err == (
        f"init: --facts {tmp_path / 'missing.jsonl'}: no such file (a .jsonl of "
        '{"prompt": ..., "target": ...} rows)\n')
    assert not out.exists()  # nothing written


@pytest.mark.slow
def test_init_on_a_model_that_does_little_leaves_parts_out_and_says_why(tmp_path, capsys):
    out = tmp_path / "interp"
    assert init.main(["--model", "tiny-random-llama", "--out", str(out), "--ioi-prompts", "8",
                      "--no-snapshots"]) == 1
    err = capsys.readouterr().err
    assert "init: left out facts: recalls 0 of 111 facts (the built-in capitals) as its top " \
           "next token, fewer than 8\n" in err
    assert "init: left out heads: no head scores above the induction (0.4) or " \
           "previous-token (0.5) label thresholds\n" in err
    assert err.endswith("init: found nothing to claim on tiny-random-llama (every part was "
                        "left out) and --no-snapshots: no suite written; drop --no-snapshots "
                        "to snapshot it\n")
    assert not out.exists()
    assert init.main(["--model", "tiny-random-llama", "--out", str(out), "--budget-seconds",
                      "0", "--no-snapshots"]) == 1
    assert "init: left out steering: the time budget ran out before it started\n" in \
        capsys.readouterr().err
    # With snapshots it still writes a suite: the lens, greedy answer and attention snapshots.
    assert init.main(["--model", "tiny-random-llama", "--out", str(out), "--ioi-prompts", "8",
                      "--parts", "facts,heads"]) == 0
    err = capsys.readouterr().err
    assert "init: the suite passes on tiny-random-llama: 3 passed" in err
    text = (out / "test_interp.py").read_text()
    assert "- facts: recalls 0 of 111 facts" in text
    assert (out / "__snapshots__" / "test_snapshots.interp").is_file()


@pytest.fixture(scope="module")
def smollm2_suite(tmp_path_factory) -> tuple[Path, str]:
    """The suite ``init`` writes for SmolLM2, and what it printed: on 8 IOI prompts (64 by
    default: the suite's five runs in the series test cost an eighth), and without init's own
    run of the suite (--no-verify): the series test runs it on SmolLM2's weights (a float32
    re-save), and init's run is tested on tiny-random-llama and Gemma-3."""
    out = tmp_path_factory.mktemp("init") / "interp"
    done = subprocess.run([sys.executable, "-m", "pytest_interp", "init", "--model",
                           "smollm2-135m", "--out", str(out), "--no-verify",
                           "--ioi-prompts", "8"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-6000:]
    return out, done.stderr


@pytest.fixture
def variant_suite(smollm2_suite, pytester: pytest.Pytester) -> pytest.Pytester:
    from tests.test_variants import VARIANTS

    shutil.copytree(smollm2_suite[0], pytester.path, dirs_exist_ok=True)
    pytester.makeconftest(VARIANTS)
    return pytester


@pytest.mark.slow
def test_the_suite_written_for_smollm2_passes_on_it_and_reads_like_a_person_wrote_it(
        smollm2_suite):
    out, said = smollm2_suite
    assert "init: wrote facts.jsonl, pytest.ini, reviews.txt, test_interp.py, " \
        "test_snapshots.py to " in said  # 9 tests: the series test runs them
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "__snapshots__", "facts.jsonl", "pytest.ini", "report", "reviews.txt",
        "test_interp.py", "test_snapshots.py"]
    text = (out / "test_interp.py").read_text()
    for line in ("@pytest.mark.logit_diff(prompts=IOI, min=", "@pytest.mark.activation_patching(",
                 '@pytest.mark.attention(kind="induction", head=(18, 6), min_score=',
                 "@pytest.mark.steering(prompts=REVIEWS, **LOVE, coef=2, min_delta="):
        assert line in text
    assert text.count("# measured") >= 10  # every bound says what it was measured as
    lint(out)


@pytest.mark.slow
def test_the_written_snapshots_fail_on_swapped_middle_layers(variant_suite):
    # The markers' margins let this through; the snapshots name what moved.
    result = variant_suite.runpytest("--interp-model=variant:layers 14 and 15 swapped",
                                     "test_snapshots.py")
    assert result.parseoutcomes().get("failed", 0) >= 3, result.stdout.str()[-3000:]
    result.stdout.fnmatch_lines(["*changed beyond the noise floor (tolerances *), * change*"])


JOURNEY = """
SHORT = {"tuned": "fine-tuned 10 steps", "L18H6-zeroed": "induction head L18H6 zeroed"}


def pytest_interp_load_model(spec, request):
    name = spec.removeprefix("variant:")
    return variant(SHORT.get(name, name)) if spec.startswith("variant:") else None
"""


# The baseline's noise floors under two perturbations: the default adds the other backend,
# whose difference is the same code's and far below the others', and whose load and re-runs
# cost a sixth of this test.
FLOORS = "--interp-noise-floor=bfloat16, noise:1e-3"


@pytest.mark.slow
def test_a_checkpoint_series_through_the_written_suite(smollm2_suite, pytester, tmp_path):
    """A new user's journey: init's suite on SmolLM2, then one session over a re-save (a
    float32 directory of the weights after a bfloat16 round trip: both benign changes in one
    model), a 10-step fine-tune and a copy with induction head L18H6 zeroed, against SmolLM2 as
    the baseline, drift reported with a budget of 5 noise floors."""
    import torch

    from pytest_interp import load_hf
    from tests.test_variants import VARIANTS

    shutil.copytree(smollm2_suite[0], pytester.path, dirs_exist_ok=True)
    pytester.makeconftest(VARIANTS + JOURNEY)
    model, tokenizer = load_hf("smollm2-135m")
    with torch.no_grad():
        for weight in model.parameters():
            weight.copy_(weight.to(torch.bfloat16).to(weight.dtype))
    model.save_pretrained(tmp_path / "resave")
    tokenizer.save_pretrained(tmp_path / "resave")
    ids = ["resave", "variant:tuned", "variant:L18H6-zeroed"]
    result = pytester.runpytest(f"--interp-model={tmp_path / 'resave'}",
                                *(f"--interp-model={spec}" for spec in ids[1:]),
                                "--interp-baseline=smollm2-135m", "--interp-drift=report",
                                "--interp-max-drift=5", FLOORS, "-v")
    out = result.stdout.str()
    assert "does not exist" not in out and "unused" not in out
    outcomes = dict(re.findall(r"^(test_\S+) (PASSED|FAILED|DRIFT|INCONCLUSIVE)\b", out,
                               re.MULTILINE))  # test id -> the status -v prints
    by_model = {model_id: sorted({(name.split("::")[1].split("[")[0], word)
                                  for name, word in outcomes.items()
                                  if name.endswith(f"[{model_id}]")})
                for model_id in ids}
    tests = sorted({name.split("::")[1].split("[")[0] for name in outcomes})
    assert len(tests) == 9, outcomes
    for benign in ("resave", "variant:tuned"):  # green: within the budget
        assert by_model[benign] == [(t, "PASSED") for t in tests], by_model[benign]
    damaged = dict(by_model["variant:L18H6-zeroed"])
    assert damaged.pop("test_induction_and_previous_token_heads") == "FAILED"
    assert damaged.pop("test_attention_heads") == "DRIFT"  # 38 noise floors, over 5
    assert set(damaged.values()) == {"PASSED"}
    result.stdout.fnmatch_lines([
        "*attention: L18H6 has induction score 0.0* (label mixed), expected min_score=*",
        "*attention of variant:L18H6-zeroed changed from baseline smollm2-135m beyond the "
        "noise floor*",
        "  L18H6: induction 0.80 -> 0.03 (label induction -> mixed)",
        "interp: * snapshots moved beyond the noise floor, within the drift budget (passed; "
        "the report shows the diffs):",
        "  ~ test_snapshots.py::test_*[[]variant:tuned]: * of variant:tuned from baseline "
        "smollm2-135m, drift * noise floors (budget 5)",
    ])
    assert "environment changed" not in out


@pytest.mark.parametrize("parts", [("ioi",), ("steering",), ("heads", "steering"),
                                   ("facts", "ioi")])
def test_the_written_suite_is_ruff_clean_with_any_parts_left_out(tmp_path, parts):
    found = smollm2_findings()
    found.parts = {part: found.parts[part] for part in parts}
    for name, text in init.render(found).items():
        (tmp_path / name).write_text(text)
    lint(tmp_path)


@pytest.mark.slow
def test_init_with_an_sae_claims_the_latent_most_selective_for_the_answers(smollm2, pytester):
    """``init --sae``: on SmolLM2's recalled capitals, the example suite's SAE's latent most
    selective for the answers (firing on the answer, not on the prompt's tokens: the place
    latent 541 also fires on the country, so it is not the one); the written test names it,
    is ruff clean and passes from the suite's own folder."""
    from pytest_interp.datasets import capitals
    from pytest_interp.init.explore import explore_features

    suite = Path(__file__).resolve().parents[1] / "example_suites" / "smollm2"
    found = smollm2_findings()
    found.parts = {"facts": found.parts["facts"]}
    found.files = {"facts.jsonl": "".join(  # as explore_facts writes them
        json.dumps({"prompt": r["prompt"], "target": r["target"], "expect": r["target"],
                    "emerges_at": 28}) + "\n" for r in capitals(16))}
    explore_features(smollm2, str(suite / "sae" / "resid_post_15"), "sae/resid_post_15", found)
    features = found.parts["features"]
    latent = features["latent"]
    assert features["share"] >= 0.5 and features["fires"]["passed"] >= 8
    assert features["share"] - features["elsewhere"] >= 0.4  # selective for the answer
    for name, text in init.render(found).items():
        (pytester.path / name).write_text(text)
    shutil.copytree(suite / "sae", pytester.path / "sae", ignore=shutil.ignore_patterns("*.py"))
    lint(pytester.path)
    text = (pytester.path / "test_interp.py").read_text()
    assert ('@pytest.mark.feature(prompts="answers.jsonl", sae=SAE, feature='
            f'{latent}, min={features["min"]},\n') in text
    assert f"Latent {latent} ({features['label']}) fires on the recalled facts' answers" in text
    result = pytester.runpytest("-k", "answers", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
