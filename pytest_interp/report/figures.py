"""Figures for the HTML report: hand-written SVG and PNG from results (numpy only, no network)."""

from __future__ import annotations

import base64
import html
import struct
import zlib
from typing import Any

import numpy as np

from ..record import SnapshotDiff
from ..results import (
    AttentionResult,
    LensResult,
    PatchingResult,
    PatchscopeResult,
    SteeringResult,
)

CELL_W, CELL_H = 58, 16


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _short(token: str, width: int = 7) -> str:
    text = repr(token)[1:-1]
    return text if len(text) <= width else text[: width - 1] + "~"


def _blue(x: float) -> str:
    """0 -> white, 1 -> deep blue."""
    x = 0.0 if not np.isfinite(x) else min(max(x, 0.0), 1.0)
    r, g = int(255 - 215 * x), int(255 - 165 * x)
    return f"rgb({r},{g},255)"


def _diverging(x: float) -> str:
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
             'font-size="10">', f"<title>{_esc(title)}</title>"]
    for j, col in enumerate(cols):
        x = left + j * CELL_W + CELL_W / 2
        parts.append(f'<text x="{x}" y="{top - 6}" text-anchor="middle">{_esc(col)}</text>')
    for i, row in enumerate(rows):
        y = top + i * CELL_H
        parts.append(f'<text x="{left - 4}" y="{y + 12}" text-anchor="end">{_esc(row)}</text>')
        for j in range(n_cols):
            x = left + j * CELL_W
            parts.append(f'<rect x="{x}" y="{y}" width="{CELL_W - 1}" height="{CELL_H - 1}" '
                         f'fill="{color(float(values[i, j]))}"/>'
                         f'<text x="{x + CELL_W / 2}" y="{y + 12}" text-anchor="middle">'
                         f"{_esc(texts[i][j])}</text>")
    parts.append("</svg>")
    return "".join(parts)


def png_data_uri(gray: np.ndarray, scale: int = 2) -> str:
    """A grayscale image [H, W] in 0..1 (1 = dark) as an inline PNG."""
    img = (255 - np.clip(gray, 0, 1) ** 0.5 * 255).astype(np.uint8)
    img = np.kron(img, np.ones((scale, scale), dtype=np.uint8))
    h, w = img.shape
    raw = b"".join(b"\x00" + row.tobytes() for row in img)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def lens_figure(result: LensResult) -> str:
    probs = np.exp(result.log_probs)  # [L, P, V]
    top = probs.argmax(-1)
    values = np.take_along_axis(probs, top[..., None], -1)[..., 0]
    texts = [[_short(result.vocab.decode_one(int(top[layer, p]))) for p in range(top.shape[1])]
             for layer in range(top.shape[0])]
    cols = [_short(result.str_tokens[p]) for p in result.positions]
    title = f"{result.lens} lens on {result.prompt!r}: top token per layer, colour = its prob"
    return (f"<h4>{_esc(title)}</h4>"
            + heatmap_svg(values, texts, [str(i) for i in range(len(texts))], cols, _blue, title))


def patching_figure(result: PatchingResult) -> str:
    values, labels, axis = result.grid_2d()
    texts = [["·" if np.isnan(v) else f"{v:.2f}" for v in row] for row in values]
    title = (f"{result.site} patching recovery, rows layer, columns {axis} (clean "
             f"{result.clean_logit_diff:+.2f}, corrupted {result.corrupted_logit_diff:+.2f})")
    return (f"<h4>{_esc(title)}</h4>" + heatmap_svg(
        values, texts, [str(i) for i in range(values.shape[0])], labels, _diverging, title))


def patchscope_figure(result: PatchscopeResult) -> str:
    head = "<tr><th>source</th><th>target</th>" + (
        f"<th>P({_esc(repr(result.expected))})</th>" if result.expected_prob else "") + \
        "<th>continuation</th></tr>"
    rows = []
    for i, ((s, t), text) in enumerate(zip(result.pairs, result.continuations, strict=True)):
        prob = f"<td>{result.expected_prob[i]:.3f}</td>" if result.expected_prob else ""
        rows.append(f"<tr><td>{s}</td><td>{t}</td>{prob}<td><code>{_esc(repr(text))}</code>"
                    "</td></tr>")
    title = (f"patchscope of {result.source_tokens[result.source_position]!r} in "
             f"{result.source!r} -> {result.target!r}")
    return f"<h4>{_esc(title)}</h4><table class='ps'>{head}{''.join(rows)}</table>"


def steering_figure(result: SteeringResult) -> str:
    title = f"steering at {result.site}@{result.layer} on {result.prompt!r}"
    parts = [f"<h4>{_esc(title)}</h4>"]
    if result.values is not None:
        delta = result.delta
        scale = max(float(np.abs(delta).max()), 1e-9)
        width, bar_h, mid = 420, 18, 210
        height = bar_h * len(delta) + 8
        svg = [f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" '
               f'height="{height}" font-family="monospace" font-size="10">'
               f"<title>{_esc(result.metric)} change per coefficient</title>"
               f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#888"/>']
        for i, (coef, d) in enumerate(zip(result.coefs, delta, strict=True)):
            w = abs(d) / scale * (mid - 60)
            x = mid if d >= 0 else mid - w
            y = 4 + i * bar_h
            svg.append(f'<rect x="{x}" y="{y}" width="{max(w, 1)}" height="{bar_h - 4}" '
                       f'fill="{"#4a7bd0" if d >= 0 else "#d05a4a"}"/>'
                       f'<text x="4" y="{y + 11}">coef {coef:g}</text>'
                       f'<text x="{width - 4}" y="{y + 11}" text-anchor="end">{d:+.3f}</text>')
        svg.append("</svg>")
        parts.append("".join(svg))
    if result.texts is not None:
        rows = "".join(f"<tr><td>{c:g}</td><td><code>{_esc(repr(t))}</code></td></tr>"
                       for c, t in zip(result.coefs, result.texts, strict=True))
        parts.append(f"<table class='ps'><tr><th>coef</th><th>generation</th></tr>"
                     f"<tr><td>baseline</td><td><code>{_esc(repr(result.baseline_text))}</code>"
                     f"</td></tr>{rows}</table>")
    return "".join(parts)


def attention_figure(result: AttentionResult) -> str:
    where = "the repeated random sequence" if result.prompt is None else repr(result.prompt)
    cells = []
    for layer in range(result.n_layers):
        for head in range(result.n_heads):
            label = result.labels[layer][head]
            uri = png_data_uri(result.patterns[layer, head])
            cells.append(f"<figure class='head {label}'><img src='{uri}' alt='L{layer}H{head}'>"
                         f"<figcaption>L{layer}H{head} {label}</figcaption></figure>")
    return (f"<h4>attention patterns on {_esc(where)} (darker = more attention)</h4>"
            f"<div class='heads'>{''.join(cells)}</div>")


def snapshot_figure(diff: SnapshotDiff) -> str:
    changes = "".join(f"<li>{_esc(c)}</li>" for c in diff.changes)
    return (f"<h4>snapshot {_esc(diff.name)} changed</h4><ul class='changes'>{changes}</ul>"
            "<div class='sbs'><div><b>stored</b><pre class='old'>"
            f"{_esc(diff.old)}</pre></div><div><b>new</b><pre class='new'>{_esc(diff.new)}"
            "</pre></div></div>")


FIGURES = {LensResult: lens_figure, PatchingResult: patching_figure,
           PatchscopeResult: patchscope_figure, SteeringResult: steering_figure,
           AttentionResult: attention_figure, SnapshotDiff: snapshot_figure}


def figure(item: Any) -> str:
    """The HTML of one recorded item ('' for anything without a figure)."""
    draw = FIGURES.get(type(item))
    return draw(item) if draw else ""
