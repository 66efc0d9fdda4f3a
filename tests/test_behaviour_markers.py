"""The next_token and perplexity markers through pytest: passes, exact failure text, and bad
arguments (collection errors)."""

from __future__ import annotations

import pytest

from pytest_interp.kinds.next_token import NextTokenExpectation
from pytest_interp.kinds.perplexity import PerplexityExpectation
from pytest_interp.model import InterpModel

from .pytester_helpers import assert_collection_error, ini

pytest_plugins = ["pytester"]

TEXT = "The cat sat on the mat and looked out of the window."


@pytest.fixture(scope="module")
def llama(load_backend):
    return InterpModel(load_backend("tiny-random-llama"))


def test_failure_texts(pytester, llama):
    ppl = PerplexityExpectation(TEXT, max=1.0).run(llama)
    nxt = NextTokenExpectation("The cat sat on the", " mat").run(llama)
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=f"""
        import pytest

        @pytest.mark.perplexity({TEXT!r}, max=1.0)
        def test_ppl():
            pass

        @pytest.mark.next_token("The cat sat on the", " mat", top_k=1, min_prob=0.5)
        def test_next():
            pass

        @pytest.mark.perplexity({TEXT!r}, min=1.0, max=1e9)
        @pytest.mark.next_token("The cat sat on the", " mat", top_k=100000)
        def test_pass():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=2)
    worst = ppl.worst()
    tops = ", ".join(f"{t!r} {p:.3f}" for t, p in nxt.top)
    result.stdout.fnmatch_lines([
        f"perplexity: {TEXT!r} has perplexity {ppl.perplexity:.3f}, expected <= 1.0 (max=1.0)",
        "  the worst tokens (position, token, loss in nats):",
        *[f"    {pos:>4}  {token!r:<16} {loss:.3f}" for pos, token, loss in worst],
    ])
    result.stdout.fnmatch_lines([
        f"next_token: ' mat' after 'The cat sat on the' has rank {nxt.rank}, expected top_k=1 "
        f"and has probability {nxt.prob:.4f}, expected min_prob=0.5",
        f"  next-token top-5: {tops}",
    ])
    assert len(worst) == 5 and worst == sorted(worst, key=lambda w: -w[2])


@pytest.mark.parametrize(("marker", "message"), [
    ('perplexity("a b")', "no check given: pass min= and/or max="),
    ('perplexity("a b", min=5, max=2)', "min=5 is greater than max=2"),
    ('perplexity("", max=2)', "text must be a non-empty string, got ''"),
    ('next_token("a", " b", top_k=0)', "top_k must be >= 1, got 0"),
    ('next_token("a", " b", min_prob=2)', "min_prob must be a probability in (0, 1], got 2"),
    ('next_token("a")', "missing a required argument: 'expect'; usage: *"),
])
def test_bad_behaviour_markers(pytester, marker, message):
    ini(pytester, model="tiny-random-llama")
    assert_collection_error(pytester, marker, message)


def test_one_token_text_fails_when_run(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.perplexity("Hello", max=10)
        def test_x():
            pass
    """)
    result = pytester.runpytest("--interp-prepend-bos=false")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["@pytest.mark.perplexity: text 'Hello' is one token: "
                                 "perplexity needs at least two"])
