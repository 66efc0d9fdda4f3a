"""Snapshots of results (syrupy): readable JSON-lines text, tolerant comparison, model-term diffs.

A result snapshot is a header line, a metadata object and one JSON object per row (a layer,
a head, a layer pair, a coefficient), stored in syrupy's per-module ``.ambr`` files. Numbers
are compared within tolerances (probabilities, logits/logit diffs, recovery); tokens, texts and
labels exactly, except that a top-1 swap between near-tied tokens or a label flip with every
score within tolerance is noise, not change. Other data (e.g. a generated string) is stored
and compared as syrupy's amber format does.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from syrupy.extensions.amber import AmberSnapshotExtension

from .record import SnapshotDiff, record
from .results import (
    ATTENTION_KINDS,
    AttentionResult,
    LensResult,
    PatchingResult,
    PatchscopeResult,
    SteeringResult,
)

HEADER = "pytest-interp snapshot v1"
TIE = 1e-4  # probabilities this close are a tie: their order is noise
EXACT = 1e9  # the size of a change in tokens, texts or labels (sorted before number changes)


@dataclass(frozen=True)
class Tolerances:
    """Absolute tolerances: probabilities and attention scores, logits, recovery."""

    prob: float = 0.02
    logit: float = 0.1
    recovery: float = 0.05


def _r(x: float, digits: int = 4) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), digits)


# ---------------------------------------------------------------------------
# Summaries: result -> (metadata, rows)


def summarize(result: Any) -> tuple[dict, list[dict]]:
    """The stored form of a result: what snapshots compare."""
    if isinstance(result, LensResult):
        meta = {"kind": "lens", "model": result.model, "lens": result.lens,
                "prompt": result.prompt, "tokens": list(result.str_tokens),
                "positions": list(result.positions)}
        rows = [{"layer": layer, "position": pos,
                 "top": [[t, _r(p)] for t, p in result.top(layer, 3, pos - len(result.str_tokens))]}
                for layer in range(result.n_layers) for pos in result.positions]
        return meta, rows
    if isinstance(result, PatchingResult):
        meta = {"kind": "patching", "model": result.model, "site": result.site,
                "clean": result.clean, "corrupted": result.corrupted, "answer": result.answer,
                "foil": result.foil, "tokens": list(result.clean_tokens),
                "clean_logit_diff": _r(result.clean_logit_diff),
                "corrupted_logit_diff": _r(result.corrupted_logit_diff)}
        rec = result.recovery
        columns = "heads" if result.heads and not result.per_position else "positions"
        rows = []
        for layer in range(rec.shape[0]):
            if rec.ndim == 3:
                rows += [{"layer": layer, "head": h, "recovery": [_r(x, 3) for x in rec[layer, h]]}
                         for h in range(rec.shape[1])]
            else:
                rows.append({"layer": layer, columns: [_r(x, 3) for x in rec[layer]]})
        return meta, rows
    if isinstance(result, PatchscopeResult):
        meta = {"kind": "patchscope", "model": result.model, "source": result.source,
                "source_position": result.source_position, "target": result.target,
                "target_position": result.target_position, "expected": result.expected}
        rows = [{"layers": f"{s}->{t}", "text": text}
                | ({"p": _r(result.expected_prob[i])} if result.expected_prob else {})
                for i, ((s, t), text) in enumerate(zip(result.pairs, result.continuations,
                                                       strict=True))]
        return meta, rows
    if isinstance(result, SteeringResult):
        meta = {"kind": "steering", "model": result.model, "prompt": result.prompt,
                "layer": result.layer, "site": result.site, "positions": result.positions,
                "target": result.target, "foil": result.foil, "baseline": _r(result.baseline),
                "baseline_top": [[t, _r(p)] for t, p in result.baseline_top],
                "baseline_text": result.baseline_text}
        rows = [{"coef": coef, "value": None if result.values is None else _r(result.values[i]),
                 "kl": _r(result.kl[i]), "top": [[t, _r(p)] for t, p in result.steered_top[i]]}
                | ({"text": result.texts[i]} if result.texts is not None else {})
                for i, coef in enumerate(result.coefs)]
        return meta, rows
    if isinstance(result, AttentionResult):
        meta = {"kind": "attention", "model": result.model, "prompt": result.prompt,
                "seed": result.seed, "n": result.n}
        rows = [{"head": f"L{layer}H{head}"}
                | {k: _r(result.scores[k][layer, head], 3) for k in ATTENTION_KINDS}
                | {"label": result.labels[layer][head]}
                for layer in range(result.n_layers) for head in range(result.n_heads)]
        return meta, rows
    raise TypeError(f"no interp snapshot for {type(result).__name__}")


SNAPSHOT_TYPES = (LensResult, PatchingResult, PatchscopeResult, SteeringResult, AttentionResult)


def render(result: Any) -> str:
    meta, rows = summarize(result)
    lines = [f"{HEADER}: {meta['kind']} of {meta['model']}",
             json.dumps(meta, ensure_ascii=False)]
    lines += [json.dumps(row, ensure_ascii=False) for row in rows]
    return "\n".join(lines)


class SnapshotFormatError(ValueError):
    """A stored snapshot that is not a readable pytest-interp snapshot."""


def parse(text: str) -> tuple[dict, list[dict]]:
    lines = text.strip("\n").split("\n")
    if not lines[0].startswith(HEADER):
        raise SnapshotFormatError(f"line 1 is not a '{HEADER}' header")
    try:
        objects = [json.loads(line) for line in lines[1:]]
    except json.JSONDecodeError as exc:
        bad = next(i for i, line in enumerate(lines[1:], 2) if not _loads_ok(line))
        raise SnapshotFormatError(f"line {bad} of the snapshot is not JSON ({exc.msg})") from None
    if not objects or not all(isinstance(o, dict) for o in objects):
        raise SnapshotFormatError("the snapshot has no metadata line")
    return objects[0], objects[1:]


def _loads_ok(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def is_ours(text: object) -> bool:
    return isinstance(text, str) and text.lstrip("\n").startswith(HEADER)


# ---------------------------------------------------------------------------
# Comparison in model terms


@dataclass(frozen=True)
class Change:
    size: float  # |difference| / tolerance, or EXACT for tokens, texts and labels
    text: str


def _num(old: float | None, new: float | None, tol: float) -> float:
    """How many tolerances apart (0 when within tolerance)."""
    if old is None or new is None:
        return 0.0 if old is new else EXACT
    gap = abs(new - old)
    return gap / tol if gap > tol else 0.0


def _top_changes(where: str, old: list, new: list, tol: float) -> list[Change]:
    """Top-k token lists: top-1 identity (ties aside), probabilities of shared tokens."""
    out = []
    if old and new and old[0][0] != new[0][0]:
        old_probs = dict((t, p) for t, p in old)
        tied = new[0][0] in old_probs and abs(old_probs[new[0][0]] - old[0][1]) <= TIE
        if not tied:
            out.append(Change(EXACT, f"{where}: top-1 {old[0][0]!r} ({old[0][1]:.2g}) -> "
                                     f"{new[0][0]!r} ({new[0][1]:.2g})"))
    new_probs = dict((t, p) for t, p in new)
    for token, p in old:
        q = new_probs.get(token)
        floor = new[-1][1] if new else 0.0
        if q is None and p - floor > tol:
            out.append(Change((p - floor) / tol, f"{where}: P({token!r}) {p:.2g} -> below the "
                                                 f"top-{len(new)} (<= {floor:.2g})"))
        elif q is not None and _num(p, q, tol):
            out.append(Change(_num(p, q, tol), f"{where}: P({token!r}) {p:.2g} -> {q:.2g}"))
    return out


_KEYS = {"lens": ("lens", "prompt", "tokens", "positions"),
         "patching": ("site", "clean", "corrupted", "answer", "foil", "tokens"),
         "patchscope": ("source", "source_position", "target", "target_position", "expected"),
         "steering": ("prompt", "layer", "site", "positions", "target", "foil"),
         "attention": ("prompt", "seed", "n")}


def compare(old: tuple[dict, list[dict]], new: tuple[dict, list[dict]],
            tol: Tolerances) -> list[Change]:
    """Every change beyond tolerance from the stored ``old`` to the ``new`` result, largest
    first."""
    (om, orows), (nm, nrows) = old, new
    kind = om.get("kind")
    if kind != nm.get("kind") or len(orows) != len(nrows) or any(
            om.get(k) != nm.get(k) for k in _KEYS.get(kind, ())):
        what = [k for k in ("kind", *_KEYS.get(nm.get("kind"), ())) if om.get(k) != nm.get(k)]
        detail = ", ".join(f"{k} {om.get(k)!r} -> {nm.get(k)!r}" for k in what) or \
            f"{len(orows)} rows -> {len(nrows)} rows"
        return [Change(EXACT, f"a different measurement: {detail}")]
    changes: list[Change] = []
    if kind == "lens":
        tokens = om["tokens"]
        for o, n in zip(orows, nrows, strict=True):
            pos = o["position"]
            where = f"layer {o['layer']} pos {pos - len(tokens)} ({tokens[pos]!r})"
            changes += _top_changes(where, o["top"], n["top"], tol.prob)
    elif kind == "patching":
        for name in ("clean_logit_diff", "corrupted_logit_diff"):
            if size := _num(om[name], nm[name], tol.logit):
                changes.append(Change(size, f"{name.replace('_', ' ')} {om[name]:+.3f} -> "
                                            f"{nm[name]:+.3f}"))
        for o, n in zip(orows, nrows, strict=True):
            key = "positions" if "positions" in o else "heads" if "heads" in o else "recovery"
            for i, (a, b) in enumerate(zip(o[key], n[key], strict=True)):
                if size := _num(a, b, tol.recovery):
                    col = (f"pos {i} ({om['tokens'][i]!r})" if key != "heads" else f"H{i}")
                    head = f" H{o['head']}" if "head" in o else ""
                    changes.append(Change(size, f"{om['site']} L{o['layer']}{head} {col}: "
                                                f"recovery {_fmt(a)} -> {_fmt(b)}"))
    elif kind == "patchscope":
        for o, n in zip(orows, nrows, strict=True):
            if o["text"] != n["text"]:
                changes.append(Change(EXACT, f"layers {o['layers']}: {o['text']!r} -> "
                                             f"{n['text']!r}"))
            if "p" in o and (size := _num(o["p"], n.get("p"), tol.prob)):
                changes.append(Change(size, f"layers {o['layers']}: P({om['expected']!r}) "
                                            f"{o['p']:.2f} -> {n['p']:.2f}"))
    elif kind == "steering":
        if size := _num(om["baseline"], nm["baseline"], tol.logit):
            changes.append(Change(size, f"baseline {om['baseline']:.3f} -> {nm['baseline']:.3f}"))
        changes += _top_changes("baseline", om["baseline_top"], nm["baseline_top"], tol.prob)
        if om.get("baseline_text") != nm.get("baseline_text"):
            changes.append(Change(EXACT, f"baseline generation {om.get('baseline_text')!r} -> "
                                         f"{nm.get('baseline_text')!r}"))
        for o, n in zip(orows, nrows, strict=True):
            where = f"coef {o['coef']:g}"
            for name in ("value", "kl"):
                if size := _num(o[name], n[name], tol.logit):
                    changes.append(Change(size, f"{where}: {name} {_fmt(o[name])} -> "
                                                f"{_fmt(n[name])}"))
            changes += _top_changes(where, o["top"], n["top"], tol.prob)
            if o.get("text") != n.get("text"):
                changes.append(Change(EXACT, f"{where}: generation {o.get('text')!r} -> "
                                             f"{n.get('text')!r}"))
    elif kind == "attention":
        for o, n in zip(orows, nrows, strict=True):
            moved = [(k, _num(o[k], n[k], tol.prob)) for k in ATTENTION_KINDS]
            moved = [(k, s) for k, s in moved if s]
            label = o["label"] != n["label"] and bool(moved)
            for k, size in moved:
                flip = f" (label {o['label']} -> {n['label']})" if label else ""
                changes.append(Change(size + (EXACT if label else 0),
                                      f"{o['head']}: {k} {o[k]:.2f} -> {n[k]:.2f}{flip}"))
                label = False
    return sorted(changes, key=lambda c: -c.size)


def _fmt(x: float | None) -> str:
    return "·" if x is None else f"{x:.2f}"


# ---------------------------------------------------------------------------
# The syrupy extension


class InterpSnapshotExtension(AmberSnapshotExtension):
    """Amber files; results stored as readable JSON lines and compared within tolerances."""

    file_extension = "interp"  # its own files: syrupy's default amber never claims them
    tolerances: ClassVar[Tolerances] = Tolerances()
    details: ClassVar[bool] = False
    shown: ClassVar[int] = 10  # changes listed in a failure without --snapshot-details

    def serialize(self, data: Any, **kwargs: Any) -> str:
        if isinstance(data, SNAPSHOT_TYPES):
            return render(data)
        return super().serialize(data, **kwargs)

    def _changes(self, serialized: str, stored: str) -> list[Change]:
        try:
            old = parse(stored)
        except SnapshotFormatError as exc:
            return [Change(EXACT, f"the stored snapshot cannot be read: {exc}; fix it by hand "
                                  "or re-create it with --snapshot-update")]
        return compare(old, parse(serialized), self.tolerances)

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        if is_ours(serialized_data) and is_ours(snapshot_data):
            return not self._changes(serialized_data, snapshot_data)
        return super().matches(serialized_data=serialized_data, snapshot_data=snapshot_data)

    def diff_lines(self, serialized_data: Any, snapshot_data: Any) -> Iterator[str]:
        if not (is_ours(serialized_data) and is_ours(snapshot_data)):
            yield from super().diff_lines(serialized_data, snapshot_data)
            return
        changes = self._changes(serialized_data, snapshot_data)
        meta = parse(serialized_data)[0]
        record(SnapshotDiff(f"{meta.get('kind')} of {meta.get('model')}", snapshot_data,
                            serialized_data, tuple(c.text for c in changes)))
        shown = changes if self.details else changes[: self.shown]
        yield (f"{meta.get('kind', 'result')} of {meta.get('model', '?')} changed beyond "
               f"tolerance ({_tolerance_text(self.tolerances)}), {len(changes)} change"
               f"{'s' if len(changes) != 1 else ''}, largest first:")
        for change in shown:
            yield f"  {change.text}"
        if len(shown) < len(changes):
            yield (f"  ... {len(changes) - len(shown)} more (--snapshot-details shows all; "
                   "--snapshot-update accepts them)")
        else:
            yield "  (--snapshot-update accepts them)"


def _tolerance_text(tol: Tolerances) -> str:
    return ", ".join(f"{f.name} {getattr(tol, f.name):g}" for f in fields(tol))


def with_tolerance(base: type[InterpSnapshotExtension] = InterpSnapshotExtension,
                   **tolerances: float) -> type[InterpSnapshotExtension]:
    """An extension class with some tolerances changed:
    ``assert interp_snapshot(extension_class=with_tolerance(prob=0.05)) == result``."""
    names = {f.name for f in fields(Tolerances)}
    unknown = sorted(set(tolerances) - names)
    if unknown:
        raise TypeError(f"unknown tolerance {unknown[0]!r}: use {', '.join(sorted(names))}")
    merged = Tolerances(**({f.name: getattr(base.tolerances, f.name) for f in fields(Tolerances)}
                           | {k: float(v) for k, v in tolerances.items()}))
    return type("InterpSnapshotExtension", (base,), {"tolerances": merged})
