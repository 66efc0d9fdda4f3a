"""The HTML report: every figure kind, failures, snapshot diffs side by side, xdist."""

from __future__ import annotations

import re

import pytest

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

SUITE = """
    import pytest

    CLEAN, CORRUPTED = "The cat sat on the", "The dog sat on the"

    @pytest.mark.lens("The cat sat", target=" on", layer=-1, top_k=1)
    def test_lens_fails():
        pass

    @pytest.mark.activation_patching(CLEAN, CORRUPTED, answer=" mat", foil=" rug",
                                     position=1, peak_layer=(0, 2))
    def test_patching():
        pass

    def test_patchscope_and_steering(interp_model):
        interp_model.patchscope("The cat sat", " cat", layer=[0, 1], expected=" the")
        v = interp_model.steering_vector("I love this", "I hate this", layer=1)
        interp_model.steer("The cat sat", v, layer=1, coef=[0, 4], target=" on",
                           max_new_tokens=3)

    @pytest.mark.attention(kind="self", min_score=0.0)
    def test_attention():
        pass

    def test_snapshot(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.logit_lens("The dog sat")
"""


def _html(pytester, *args: str) -> str:
    report = pytester.path / "out" / "report.html"
    result = pytester.runpytest("--interp-report", str(report), *args)
    result.stdout.fnmatch_lines([f"interp: report written to {report}"])
    return report.read_text()


def test_report_has_every_figure(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE)
    (pytester.path / "__snapshots__").mkdir()
    first = _html(pytester, "--snapshot-update")
    page = _html(pytester)
    assert "http" not in re.sub(r"xmlns=\"http://www.w3.org/2000/svg\"", "", page)  # offline
    assert page.count("<section") == 5 and first.count("<section") == 5
    assert '<section class="test failed" id="test_m.py::test_lens_fails">' in page
    assert "lens: &#39; on&#39; has rank" in page  # the failure text, escaped
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg" class="figure"') >= 4
    assert "logit lens on &#x27;The cat sat&#x27;" in page
    assert "resid_pre patching recovery" in page
    assert "<table class='ps'>" in page  # patchscope and steering generations
    assert page.count("src='data:image/png;base64,") == 3 * 4  # one thumbnail per head
    assert "L2H3" in page


def test_report_shows_a_failed_snapshot_side_by_side(pytester, load_raw_hf, tmp_path):
    from .test_snapshot import _perturbed_copy

    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m="""
        def test_heads(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.attention()
    """)
    pytester.runpytest("--snapshot-update").assert_outcomes(passed=1)
    _perturbed_copy(load_raw_hf, tmp_path / "perturbed", layer=1, head=2)
    page = _html(pytester, "--interp-model", str(tmp_path / "perturbed"))
    assert "<h4>snapshot attention of perturbed changed</h4>" in page
    assert "<li>L1H2: entropy 2.70 -&gt; 0.00</li>" in page
    assert "<pre class='old'>pytest-interp snapshot v1: attention of tiny-random-llama" in page
    assert "<pre class='new'>pytest-interp snapshot v1: attention of perturbed" in page
    # the lines that differ, stored (-) then new (+): the header names the other model
    assert ("<pre class='diff'><span class='del'>- pytest-interp snapshot v1: attention of "
            "tiny-random-llama") in page
    assert "<span class='add'>+ pytest-interp snapshot v1: attention of perturbed" in page


@pytest.mark.parametrize("args", [("-n", "2")], ids=["xdist"])
@pytest.mark.slow
def test_report_under_xdist(pytester, args):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE.split("def test_snapshot")[0])
    page = _html(pytester, *args)
    assert page.count("<section") == 4
    assert "resid_pre patching recovery" in page and "data:image/png" in page


def test_report_opens_with_a_summary_failed_first(pytester):
    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE.split("def test_snapshot")[0])
    page = _html(pytester)
    counts = re.search(r'<p id="counts">(.*?) in ', page).group(1)
    assert re.sub("<[^>]+>", "", counts) == "1 failed, 3 passed"
    summary = re.findall(r'<li><a href="#([^"]+)"><span class="o-(\w+)">', page)
    assert summary[0] == ("test_m.py::test_lens_fails", "failed")
    assert sorted(o for _, o in summary[1:]) == ["passed"] * 3
    assert "<tr><td>@attention</td>" in page  # counts by marker kind
    assert '<input type="checkbox" value="failed" checked> failed (1)' in page
    assert "Tests x models" not in page  # one model: no grid, no trends


def test_report_of_a_series_has_a_grid_and_trend_charts(pytester):
    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.attention(kind="self", min_score=0.1)
        def test_self_head():
            pass
    """)
    page = _html(pytester, "--interp-model=tiny-random-llama", "--interp-model=tiny-random-gpt2",
                 "--interp-model=tiny-random-qwen2")
    start = page.index('<table class="grid"')
    grid = page[start:page.index("</table>", start)]
    assert re.findall(r"<th>([^<]+)</th>", grid) == [
        "test", "tiny-random-llama", "tiny-random-gpt2", "tiny-random-qwen2"]
    assert "<td>test_m.py::test_self_head</td>" in grid
    assert len(re.findall(r'<a href="#test_m.py::test_self_head\[', grid)) == 3
    assert "test_m.py::test_self_head: @attention(kind=&#39;self&#39;): highest self score" in page
    line = re.search(r'<polyline points="([^"]+)"', page).group(1)
    assert len(line.split()) == 3  # one point per model, in order
    xs = [float(p.split(",")[0]) for p in line.split()]
    assert xs == sorted(xs)
    assert "bound 0.1" in page


def test_lens_figure_reads_every_prompt_position(load_backend):
    from pytest_interp.kinds.lens import lens_figure
    from pytest_interp.model import InterpModel

    model = InterpModel(load_backend("tiny-random-llama"))
    result = model.lens("The cat sat on the mat")  # the last position only
    assert result.positions == (len(result.str_tokens) - 1,)
    page = lens_figure(result)
    assert "(* = the positions the test read)" in page
    columns = re.findall(r'<text x="[\d.]+" y="28" text-anchor="middle">([^<]*)</text>', page)
    assert len(columns) == len(result.str_tokens)
    assert columns[-1].endswith("*") and not any(c.endswith("*") for c in columns[:-1])
    whole = model.lens("The cat sat on the mat", positions=None)
    assert "(* = the positions" not in lens_figure(whole)


def test_attention_figure_maps_every_head_and_shows_the_clearest(load_backend, monkeypatch):
    from pytest_interp.kinds import attention
    from pytest_interp.model import InterpModel

    monkeypatch.setattr(attention, "THUMBNAILS", 5)
    result = InterpModel(load_backend("tiny-random-llama")).attention()
    page = attention.attention_figure(result)
    assert page.count("<rect") == result.n_layers * result.n_heads  # the role grid
    assert page.count("src='data:image/png;base64,") == 5
    assert "the 5 with the clearest roles" in page
