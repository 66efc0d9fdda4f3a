"""The HTML report and the documentation site in a real browser: headless Debian Chromium
driven by Selenium."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .pytester_helpers import ini
from .test_report import SUITE

pytest_plugins = ["pytester"]

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


def _need_browser() -> None:
    if not (CHROMIUM and DRIVER):
        message = "needs Debian chromium + chromium-driver: run bash .ci/setup"
        if os.environ.get("PYTEST_INTERP_REQUIRE_BROWSER"):
            pytest.fail(message)  # CI sets it: a missing browser is an error there
        pytest.skip(message)


def _chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def test_series_report_draws_trends_grid_and_filters_in_chromium(pytester, tmp_path):
    _need_browser()
    from selenium.webdriver.common.by import By

    pytester.makepyfile(test_m="""
        import pytest

        @pytest.mark.attention(kind="self", min_score=0.1)
        def test_self_head():
            pass

        def test_plain(interp_model):
            pass
    """)
    report = tmp_path / "series.html"
    pytester.runpytest("--interp-model=tiny-random-llama", "--interp-model=tiny-random-gpt2",
                       f"--interp-report={report}")
    driver = _chromium()
    try:
        driver.get(report.as_uri())
        chart = driver.find_element(By.CSS_SELECTOR, "svg.trend")
        assert chart.size["width"] >= 300 and chart.size["height"] >= 150
        line = chart.find_element(By.TAG_NAME, "polyline")
        assert driver.execute_script("return arguments[0].getTotalLength()", line) > 50
        assert len(chart.find_elements(By.TAG_NAME, "circle")) == 2
        grid = driver.find_element(By.ID, "grid")
        assert grid.is_displayed()
        assert len(grid.find_elements(By.CSS_SELECTOR, "td a")) == 4  # 2 tests x 2 models
        sections = driver.find_elements(By.CSS_SELECTOR, "section.test")
        passed = [s for s in sections if "passed" in s.get_attribute("class")]
        assert passed and all(s.is_displayed() for s in passed)
        box = driver.find_element(By.CSS_SELECTOR, "#filter input[value='passed']")
        box.click()
        assert not any(s.is_displayed() for s in passed)
        box.click()
        assert all(s.is_displayed() for s in passed)
    finally:
        driver.quit()


def test_report_renders_in_chromium(pytester, load_raw_hf, tmp_path):
    _need_browser()
    from selenium.webdriver.common.by import By

    from .test_snapshot import _perturbed_copy

    ini(pytester, model="tiny-random-llama")
    pytester.makepyfile(test_m=SUITE + """
    def test_heads(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.attention()
    """)
    pytester.runpytest("--snapshot-update")
    _perturbed_copy(load_raw_hf, tmp_path / "perturbed", layer=1, head=2)
    report = tmp_path / "report.html"
    # "--opt=value": a separate path argument would move pytest's rootdir (and the nodeids)
    pytester.runpytest(f"--interp-model={tmp_path / 'perturbed'}", f"--interp-report={report}")

    driver = _chromium()
    try:
        driver.get(report.as_uri())
        assert driver.title == "pytest-interp report"
        svgs = driver.find_elements(By.CSS_SELECTOR, "svg.figure")
        assert len(svgs) >= 4
        for svg in svgs:
            assert svg.size["width"] > 50 and svg.size["height"] > 20
            assert svg.find_elements(By.TAG_NAME, "rect")
        images = driver.find_elements(By.CSS_SELECTOR, "figure.head img")
        assert len(images) >= 12
        for img in images:
            assert driver.execute_script("return arguments[0].complete && "
                                         "arguments[0].naturalWidth > 0", img)
        failed = driver.find_element(By.ID, "test_m.py::test_heads")
        assert "failed" in failed.get_attribute("class")
        old = failed.find_element(By.CSS_SELECTOR, "pre.old")
        new = failed.find_element(By.CSS_SELECTOR, "pre.new")
        assert old.is_displayed() and new.is_displayed()
        assert old.location["x"] < new.location["x"]  # side by side
        for pre in failed.find_elements(By.CSS_SELECTOR, "pre.old, pre.new, pre.diff"):
            assert driver.execute_script(  # long lines wrap: nothing scrolls sideways
                "return arguments[0].scrollWidth <= arguments[0].clientWidth", pre)
        assert "L1H2: entropy 2.70 -> 0.00" in failed.text
        driver.execute_script("arguments[0].scrollIntoView()", failed)
        shot = tmp_path / "report.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_docs_site_builds_offline_and_renders_in_chromium(tmp_path):
    """`mkdocs build --strict` of docs/ (no network: no web fonts, a local search index), then
    a kind's page in Chromium: its title, the navigation's sections, a rendered code block."""
    _need_browser()
    if importlib.util.find_spec("mkdocs") is None:
        message = "needs mkdocs-material and mkdocstrings: run bash .ci/setup"
        if os.environ.get("PYTEST_INTERP_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium.webdriver.common.by import By

    root = Path(__file__).resolve().parents[1]
    site = tmp_path / "site"
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                            str(root / "mkdocs.yml"), "--site-dir", str(site)],
                           capture_output=True, text=True, cwd=root, timeout=300)
    assert build.returncode == 0, build.stderr[-4000:]
    page = site / "kinds" / "lens" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert "fonts.googleapis.com" not in html and "fonts.gstatic.com" not in html
    assert (site / "search" / "search_index.json").stat().st_size > 10_000

    driver = _chromium()
    try:
        driver.get(page.as_uri())
        assert driver.title.startswith("Lens") and driver.title.endswith("pytest-interp")
        nav = driver.find_element(By.CSS_SELECTOR, "nav.md-nav--primary")
        sections = nav.get_attribute("textContent")
        for section in ("Getting started", "Concepts", "Kinds", "Models", "CI", "CLI",
                        "Writing your own kind", "Benchmarks", "Reference"):
            assert section in sections, section
        code = driver.find_element(By.CSS_SELECTOR, "article .highlight pre code")
        assert code.is_displayed() and "@pytest.mark.lens(" in code.text
        assert code.find_elements(By.CSS_SELECTOR, "span")  # highlighted: tokens in spans
        assert driver.execute_script(  # the theme's stylesheet applied: a sticky header
            "return getComputedStyle(document.querySelector('.md-header')).position") == "sticky"
    finally:
        driver.quit()
