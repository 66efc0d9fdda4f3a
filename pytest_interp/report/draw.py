"""expect layer: drawing helpers for report figures: SVG heatmaps and strips (Jinja2 macros in
templates/figures.j2) and inline PNGs (Pillow); no network."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

CELL_W, CELL_H = 58, 16


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def short(token: str, width: int = 7) -> str:
    text = repr(token)[1:-1]
    return text if len(text) <= width else text[: width - 1] + "~"


def blue(x: float) -> str:
    """0 -> white, 1 -> deep blue."""
    x = 0.0 if not np.isfinite(x) else min(max(x, 0.0), 1.0)
    r, g = int(255 - 215 * x), int(255 - 165 * x)
    return f"rgb({r},{g},255)"


def diverging(x: float) -> str:
    """-1 -> red, 0 -> white, 1 -> blue; NaN -> grey."""
    if not np.isfinite(x):
        return "rgb(225,225,225)"
    x = min(max(x, -1.0), 1.0)
    v = int(255 - 200 * abs(x))
    return f"rgb({v},{v},255)" if x >= 0 else f"rgb(255,{v},{v})"


def _macros() -> Any:
    """The figure macros of ``templates/figures.j2`` (autoescaped)."""
    global _MACROS
    if _MACROS is None:
        from jinja2 import Environment, PackageLoader, select_autoescape

        env = Environment(loader=PackageLoader("pytest_interp.report"),
                          autoescape=select_autoescape(default=True, default_for_string=True))
        _MACROS = env.get_template("figures.j2").module
    return _MACROS


_MACROS: Any = None


def heatmap_svg(values: np.ndarray, texts: list[list[str]], rows: list[str], cols: list[str],
                color: Any, title: str) -> str:
    """A labelled grid: one rect per cell, coloured by ``color(value)``, with its text."""
    n_rows, n_cols = values.shape
    left, top = 44, 34
    width, height = left + n_cols * CELL_W + 4, top + n_rows * CELL_H + 4
    head = [{"x": left + j * CELL_W + CELL_W / 2, "y": top - 6, "text": col}
            for j, col in enumerate(cols)]
    body = [{"x": left - 4, "y": top + i * CELL_H + 12, "text": row, "cells": [
        {"x": left + j * CELL_W, "y": top + i * CELL_H, "w": CELL_W - 1, "h": CELL_H - 1,
         "fill": color(float(values[i, j])), "tx": left + j * CELL_W + CELL_W / 2,
         "ty": top + i * CELL_H + 12, "text": texts[i][j]} for j in range(n_cols)]}
        for i, row in enumerate(rows)]
    return str(_macros().heatmap(width, height, title, head, body))


def png_data_uri(gray: np.ndarray, scale: int = 2) -> str:
    """A grayscale image [H, W] in 0..1 (1 = dark) as an inline PNG, each value a
    ``scale`` x ``scale`` block."""
    from PIL import Image

    img = (255 - np.clip(gray, 0, 1) ** 0.5 * 255).astype(np.uint8)
    h, w = img.shape
    picture = Image.fromarray(img).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def strip_svg(values: list[float], passed: list[bool], low: float | None, high: float | None,
              interval: tuple[float, float], estimate: float, title: str) -> str:
    """Per-prompt values as jittered dots on one axis (red: the row fails its own check), the
    bounds as dashed lines and the estimate's interval as a band with a tick."""
    width, height, pad = 560, 90, 30
    marks = [*values, *(b for b in (low, high) if b is not None), *interval]
    lo, hi = min(marks), max(marks)
    span = hi - lo or 1.0

    def x(v: float) -> float:
        return round(pad + (v - lo) / span * (width - 2 * pad), 1)

    rng = np.random.default_rng(0)
    dots = [{"x": x(v), "y": round(40 + float(rng.uniform(-14, 14)), 1), "ok": ok}
            for v, ok in zip(values, passed, strict=True)]
    return str(_macros().strip(
        width, height, title, {"x": x(interval[0]), "w": round(max(1.0, x(interval[1])
                                                                    - x(interval[0])), 1)},
        x(estimate), dots, [{"x": x(b), "text": f"{b:g}"} for b in (low, high) if b is not None],
        f"{lo:.3g}", f"{hi:.3g}", pad))
