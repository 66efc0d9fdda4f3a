"""expect layer: the self-contained HTML report (a Jinja2 template): a summary with links, failed
first, an outcome filter, and with several models a test x model grid and trend charts; then one
section per test with its status, failure text and figures."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..storage import atomic_write
from .summary import series_key

OUTCOMES = ("failed", "drift", "inconclusive", "skipped", "passed")  # the summary's order


@dataclass
class Entry:
    nodeid: str
    outcome: str = "passed"
    duration: float = 0.0
    failure: str = ""
    figures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. VACUOUS (--interp-controls)
    points: list[dict[str, Any]] = field(default_factory=list)  # per expectation: kind, value
    model: str | None = None  # the model's id in a series (several --interp-model)
    drift: float | None = None  # its snapshots' largest drift, in noise floors (None: none)
    measured: list[str] = field(default_factory=list)  # each marker's label, value, verdict

    @property
    def key(self) -> str:
        """The node id without the model's id: the same test on every model."""
        return series_key(self.nodeid, self.model)


@dataclass(frozen=True)
class Trend:
    """One expectation's value across the models, drawn as a line chart (SVG coordinates)."""

    test: str
    title: str
    width: int
    height: int
    points: list[dict[str, Any]]  # x, y, label, value, verdict, and y0/y1 of an interval
    bounds: list[dict[str, Any]]  # y and label of each bound line
    ticks: list[dict[str, Any]]  # y and label of the value axis
    line: str  # the polyline's points


def trends(entries: list[Entry], models: list[str]) -> list[Trend]:
    """A chart per test and marker (each marker its own line, named by its label), and per
    test of its snapshots' drift, over the models it was measured on (at least two)."""
    series: dict[tuple[str, str, int, str], dict[str, dict[str, Any]]] = {}
    titles: dict[tuple[str, str, int, str], str] = {}
    for entry in entries:
        for point in entry.points:
            if entry.model is not None and point.get("value") is not None:
                key = (entry.key, point["kind"], point.get("index", -1), point["name"])
                series.setdefault(key, {})[entry.model] = point
                label = f"({point['label']})" if point.get("label") else ""
                titles[key] = f"snapshot {point['name']}" if point["kind"] == "snapshot" \
                    else f"@{point['kind']}{label}: {point['name']}"
    return [_chart(key[0], titles[key], models, by_model)
            for key, by_model in series.items() if len(by_model) > 1]


def _chart(test: str, title: str, models: list[str], by_model: dict[str, dict[str, Any]]
           ) -> Trend:
    width, height, left, right, top, bottom = max(360, 70 * len(models)), 200, 56, 16, 14, 44
    found = [(i, by_model[m]) for i, m in enumerate(models) if m in by_model]
    first = found[0][1]
    bounds = [b for b in (first.get("low"), first.get("high")) if b is not None]
    values = [p["value"] for _, p in found] + bounds + [
        v for _, p in found for v in p.get("interval") or ()]
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if hi == lo else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))

    def x(i: int) -> float:
        return left + (i + 0.5) * (width - left - right) / len(models)

    def y(v: float) -> float:
        return round(top + (hi - v) / (hi - lo) * (height - top - bottom), 1)

    points = []
    for i, p in found:
        point = {"x": round(x(i), 1), "y": y(p["value"]), "label": models[i],
                 "value": p["value"], "verdict": p["verdict"]}
        if p.get("interval"):
            point |= {"y0": y(p["interval"][0]), "y1": y(p["interval"][1])}
        points.append(point)
    return Trend(
        test=test, title=title, width=width, height=height, points=points,
        bounds=[{"y": y(b), "label": f"{b:g}"} for b in bounds],
        ticks=[{"y": y(v), "label": f"{v:.3g}"} for v in (lo, (lo + hi) / 2, hi)],
        line=" ".join(f"{p['x']},{p['y']}" for p in points))


def write_report(path: Path, entries: list[Entry], header: list[str], wall: float,
                 models: list[str] | None = None) -> None:
    """Write the report to ``path`` (parents created). ``models``: the series' ids, in order,
    when several models ran."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    models = models or []
    counts = {o: sum(e.outcome == o for e in entries) for o in OUTCOMES}
    counts |= {e.outcome: sum(x.outcome == e.outcome for x in entries) for e in entries}
    kinds: dict[str, dict[str, int]] = {}
    for entry in entries:
        for point in entry.points:
            if point["kind"] == "snapshot":
                continue  # a drift, not a marker's verdict
            row = kinds.setdefault(point["kind"], {})
            row[point["verdict"]] = row.get(point["verdict"], 0) + 1
    rank = {o: i for i, o in enumerate(OUTCOMES)}
    grid: dict[str, dict[str, Entry]] = {}
    for entry in entries:
        if entry.model is not None:
            grid.setdefault(entry.key, {})[entry.model] = entry
    env = Environment(loader=PackageLoader("pytest_interp.report"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    page = env.get_template("report.html.j2").render(
        header=header, wall=wall, written=time.strftime("%Y-%m-%d %H:%M:%S"),
        entries=entries, counts={k: n for k, n in counts.items() if n},
        summary=sorted(entries, key=lambda e: rank.get(e.outcome, len(OUTCOMES))),
        kinds=kinds, models=models, grid=grid, trends=trends(entries, models),
        drifts=any(e.drift is not None for e in entries))
    atomic_write(path, page)  # a run killed while writing leaves the previous report
