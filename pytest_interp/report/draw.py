"""Drawing helpers for report figures: SVG heatmaps and inline PNGs (Pillow; no network)."""

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


def heatmap_svg(values: np.ndarray, texts: list[list[str]], rows: list[str], cols: list[str],
                color: Any, title: str) -> str:
    """A labelled grid: one rect per cell, coloured by ``color(value)``, with its text."""
    n_rows, n_cols = values.shape
    left, top = 44, 34
    width, height = left + n_cols * CELL_W + 4, top + n_rows * CELL_H + 4
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" '
             'font-size="10">', f"<title>{esc(title)}</title>"]
    for j, col in enumerate(cols):
        x = left + j * CELL_W + CELL_W / 2
        parts.append(f'<text x="{x}" y="{top - 6}" text-anchor="middle">{esc(col)}</text>')
    for i, row in enumerate(rows):
        y = top + i * CELL_H
        parts.append(f'<text x="{left - 4}" y="{y + 12}" text-anchor="end">{esc(row)}</text>')
        for j in range(n_cols):
            x = left + j * CELL_W
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" '
                         f'fill="{color(float(values[i, j]))}"/>'
                         f'<text x="{x + CELL_W / 2}" y="{y + 12}" text-anchor="middle">'
                         f"{esc(texts[i][j])}</text>")
    parts.append("</svg>")
    return "".join(parts)


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
        return pad + (v - lo) / span * (width - 2 * pad)

    rng = np.random.default_rng(0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" '
             f'font-size="10"><title>{esc(title)}</title>',
             f'<rect x="{x(interval[0]):.1f}" y="18" height="44" width='
             f'"{max(1.0, x(interval[1]) - x(interval[0])):.1f}" fill="rgb(74,123,208)" '
             'fill-opacity="0.18"/>',
             f'<line x1="{x(estimate):.1f}" x2="{x(estimate):.1f}" y1="14" y2="66" '
             'stroke="rgb(29,79,160)" stroke-width="2"/>']
    for v, ok in zip(values, passed, strict=True):
        y = 40 + float(rng.uniform(-14, 14))
        parts.append(f'<circle cx="{x(v):.1f}" cy="{y:.1f}" r="3" fill-opacity="0.7" '
                     f'fill="{"rgb(58,157,74)" if ok else "rgb(208,69,58)"}"/>')
    for bound in (low, high):
        if bound is not None:
            parts.append(f'<line x1="{x(bound):.1f}" x2="{x(bound):.1f}" y1="8" y2="72" '
                         'stroke="black" stroke-dasharray="4 3"/>'
                         f'<text x="{x(bound):.1f}" y="84" text-anchor="middle">{bound:g}</text>')
    parts.append(f'<text x="{pad}" y="10">{lo:.3g}</text><text x="{width - pad}" y="10" '
                 f'text-anchor="end">{hi:.3g}</text></svg>')
    return "".join(parts)
