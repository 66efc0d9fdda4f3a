"""top layer: what ``init`` measures on a model: facts it recalls (and where they emerge in the
logit lens), IOI and the layers patching moves the answer through, induction and previous-token
heads, a steering direction; each part within a time budget."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..dataset_expectation import dataset, datasets
from ..datasets import capitals, ioi
from ..errors import InterpError
from .bounds import fraction_bound, lower_bound, upper_bound

T = TypeVar("T")

PARTS = ("facts", "ioi", "heads", "steering")

#: How far a bound sits beyond the measured interval's far end: a share of the measured value,
#: at least an absolute step in the value's unit; fractions sit a fixed step below the Wilson
#: interval's low end. Bounds are rounded outwards (to 2 decimals, logits to 1).
REVIEWS = ("I think this movie is", "The food at this restaurant was",
           "My opinion of the new phone is that it is", "Honestly, the concert last night was",
           "The hotel room we stayed in was", "Reading this book was",
           "The service at the bank today was", "Overall, the game was")
CONTRAST = {"positive": "I love this", "negative": "I hate this", "target": " great",
            "foil": " terrible"}
SWEEP_PROMPTS = 16  # IOI prompts the layer sweep averages over
SWEEP_CHUNK = 8  # steering layers per batch of the sweep (the budget is checked between)
MIN_FACTS = 8  # fewer recalled facts than this: no facts test (an interval would say little)


@dataclass
class Budget:
    """Seconds left for exploring; None: unbounded."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.start > self.seconds


@dataclass
class Findings:
    """What exploring found: each part's template values, and what was left out and why."""

    spec: str
    model_name: str
    n_layers: int
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def steps(items: Sequence[T], desc: str) -> Iterator[T]:
    """``items`` with a tqdm bar on stderr, when stderr is a terminal."""
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, unit="step", file=sys.stderr, leave=False, disable=None)


def explore_facts(model: Any, rows: Sequence[dict[str, Any]], source: str,
                  found: Findings, budget: Budget) -> None:
    """Which facts the model recalls (top-1 next token) and from which layer each stays in
    the logit lens's top 5; dataset expectations over the recalled ones."""
    from ..probes.lens import lens_rows

    kept: dict[int, dict[str, Any]] = {}
    for i, lens in lens_rows(model, [row["prompt"] for row in rows]):  # a pass per length
        if budget.spent():
            found.left_out["facts"] = "the time budget ran out while trying the facts"
            return
        row = rows[i]
        if lens.rank(row["target"], layer=-1) == 0:
            kept[i] = {"prompt": row["prompt"], "target": row["target"], "expect": row["target"],
                       "emerges_at": lens.emergence_layer(row["target"], top_k=5)}
    recalled = [kept[i] for i in sorted(kept)]
    if len(recalled) < MIN_FACTS:
        found.left_out["facts"] = (f"recalls {len(recalled)} of {len(rows)} facts ({source}) "
                                   f"as its top next token, fewer than {MIN_FACTS}")
        return
    emerges = sorted(r["emerges_at"] for r in recalled)
    by = emerges[(len(emerges) - 1) // 2]  # half emerge by this layer (the lower median)
    found.files["facts.jsonl"] = "".join(json.dumps(r) + "\n" for r in recalled)
    next_token = dataset(model, "next_token", recalled, stat="fraction", min_fraction=0)
    prob = dataset(model, "next_token", recalled, min_prob=1e-9)  # read the mean
    emergence = None
    if by < model.info.n_layers - 1:  # at the last layer it would restate the recall
        emergence = _fraction(dataset(model, "lens", recalled, emerges_by=by, top_k=5,
                                      stat="fraction", min_fraction=0))
        if emergence["min"] <= 0:  # a bound of 0 would claim nothing
            emergence = None
    found.parts["facts"] = {
        "n": len(recalled), "total": len(rows), "source": source, "first": recalled[0],
        "by": by, "next_token": _fraction(next_token),
        "emergence": emergence, "prob": _interval(prob.estimate, "unit"),
    }


def explore_ioi(model: Any, n: int, found: Findings, budget: Budget) -> None:
    """Whether the model does IOI over ``ioi:n`` (the logit diff's interval clears 0) and
    where patching the clean residual stream into the corrupted run restores the answer:
    every layer at END and S2 swept on up to ``SWEEP_PROMPTS`` prompts (one batched grid
    each), the chosen cells then measured over all ``n``."""
    source = f"ioi:{n}"
    diff = dataset(model, "logit_diff", source, min=0)
    if diff.estimate.low <= 0:
        found.left_out["ioi"] = f"does not do IOI: logit diff over {source} is {diff.estimate}"
        return
    grids = []
    for row in steps(ioi(min(n, SWEEP_PROMPTS)), "ioi sweep"):
        if budget.spent():
            found.left_out["ioi"] = "the time budget ran out during the patching sweep"
            return
        s2 = row["roles"]["S2"][0]  # the subject's last mention, as a position
        result = model.activation_patching(row["clean"], row["corrupted"], answer=row["answer"],
                                           foil=row["foil"], positions=[s2, -1])
        grids.append(result.recovery[:, [result.position_index(s2), -1]])
    mean = np.mean(grids, axis=0)
    s2, end = mean[:, 0], mean[:, 1]
    layers = range(model.info.n_layers)
    # Claims away from the crossing, so a benign change that shifts it by a layer still passes.
    cross = next((layer for layer in layers if end[layer] >= 0.5), len(end) - 1)
    late = min(len(end) - 1, next((layer for layer in layers if end[layer] >= 0.9),
                                  len(end) - 1) + 2)
    early = max(0, cross - 4)
    mid = max(0, min(cross - 1, max((layer for layer in layers if s2[layer] >= 0.7),
                                    default=0) - 2))
    cells = {"late": ("END", late), "mid": ("S2", mid), "early": ("END", early)}
    measured = {}
    for name, (position, layer) in cells.items():
        measured[name] = {"layer": layer, **_interval(dataset(
            model, "activation_patching", source, layer=layer, position=position,
            min_recovery=-10).estimate, "unit")}
    first = ioi(1)[0]
    found.parts["ioi"] = {
        "source": source, "n": n, "diff": _interval(diff.estimate, "logit"),
        "swept": len(grids), "cross": cross,
        "s2_gone": next((layer for layer in layers if layer > mid and s2[layer] < 0.5), None),
        **measured,
        "clean": first["clean"], "corrupted": first["corrupted"], "answer": first["answer"],
        "foil": first["foil"],
    }


def explore_heads(model: Any, found: Findings) -> None:
    """The clearest induction and previous-token heads (scores on seeded repeated random
    tokens, as the attention marker reads them)."""
    heads = model.attention()
    picked: dict[str, list[dict[str, Any]]] = {}
    for kind, threshold in (("induction", 0.4), ("previous_token", 0.5)):
        picked[kind] = []
        for layer, head in heads.best(kind, k=3):
            score = heads.score(kind, layer, head)
            if score < threshold:
                break
            picked[kind].append({"layer": layer, "head": head, "score": score,
                                 "min": lower_bound(score, score, "unit")})
    if not any(picked.values()):
        found.left_out["heads"] = "no head scores above the induction (0.4) or previous-token " \
                                  "(0.5) label thresholds"
        return
    found.parts["heads"] = picked


def explore_steering(model: Any, found: Findings, budget: Budget) -> None:
    """The layer where adding the love - hate direction (coef 2) most raises
    logit(' great') - logit(' terrible') over the review openings, and its effect there."""
    reviews = list(REVIEWS)
    common: dict[str, Any] = dict(positive=CONTRAST["positive"],
                                  negative=CONTRAST["negative"], positions=1,
                                  target=CONTRAST["target"], foil=CONTRAST["foil"])
    tried: dict[int, Any] = {}

    def sweep(layers: Sequence[int]) -> None:  # the layers' rows share forward passes
        layers = [layer for layer in layers if layer not in tried]
        results = datasets(model, "steering", reviews, [{"layer": layer} for layer in layers],
                           coef=2, min_delta=0, **common)
        tried.update((layer, result.estimate) for layer, result in zip(layers, results,
                                                                       strict=True))

    # Every other layer, then the best one's neighbours: the effect varies slowly with depth.
    every_other = range(1, model.info.n_layers - 1, 2)
    for lo in steps(range(0, len(every_other), SWEEP_CHUNK), "steering sweep"):
        if budget.spent():
            break
        sweep(every_other[lo:lo + SWEEP_CHUNK])
    if tried and not budget.spent():
        top = max(tried, key=lambda layer: tried[layer].low)
        sweep([layer for layer in (top - 1, top + 1) if 0 < layer < model.info.n_layers - 1])
    best = max(tried.items(), key=lambda item: item[1].low, default=None)
    if best is None or best[1].low <= 0:
        found.left_out["steering"] = "no layer where the love - hate direction raises " \
                                     "' great' over ' terrible' with an interval above 0"
        return
    layer, up = best
    down, control = datasets(model, "steering", reviews, [
        {"coef": -2, "max_delta": 0},
        {"coef": 2, "min_delta": 0, "control": 8, "stat": "fraction", "min_fraction": 0}],
        layer=layer, **common)
    found.files["reviews.txt"] = "".join(r + "\n" for r in reviews)
    found.parts["steering"] = {
        "layer": layer, "up": _interval(up, "logit"), "down": _interval(down.estimate, "logit"),
        "control": _fraction(control), "contrast": CONTRAST, "first": reviews[0],
        "n": len(reviews),
    }


def explore_features(model: Any, sae: str, suite_sae: str, found: Findings) -> None:
    """The latent of dictionary ``sae`` most selective for the recalled facts' answers: the
    one firing on the answer token (prompt + target) of the most facts, less the share of the
    prompts' own tokens it fires on; a dataset claim that it fires on the answers, at least at
    half its median activation there."""
    if "facts.jsonl" not in found.files:
        found.left_out["features"] = "it needs the facts part (the recalled facts' answers)"
        return
    facts = [json.loads(line) for line in found.files["facts.jsonl"].splitlines()]
    answered = [row["prompt"] + row["target"] for row in facts]
    dictionary = model.dictionary(sae)
    on_answer, elsewhere, positions = np.zeros(dictionary.n_latents), \
        np.zeros(dictionary.n_latents), 0
    results = model.features_of(answered, sae)
    for result in results:
        on_answer[[i for i, _ in result.active(-1)]] += 1
        for p in range(len(result.str_tokens) - 1):
            elsewhere[[i for i, _ in result.active(p)]] += 1
            positions += 1
    share = on_answer / len(results)
    latent = int(np.argmax(share - elsewhere / max(positions, 1)))
    if share[latent] < 0.5:
        found.left_out["features"] = (f"no latent of {sae} fires on the answers of half the "
                                      f"{len(facts)} recalled facts")
        return
    median = float(np.median([r.activation(latent) for r in results]))
    floor = float(f"{median / 2:.2g}")
    fires = dataset(model, "feature", answered, sae=sae, feature=latent, min=floor,
                    stat="fraction", min_fraction=0)
    label = model.features_of(answered[:1], sae, asked=[latent])[0].label(latent).replace(
        "\\", "\\\\")  # written into a docstring
    found.files["answers.jsonl"] = "".join(json.dumps({"prompt": text}) + "\n"
                                           for text in answered)
    found.parts["features"] = {
        "sae": suite_sae, "latent": latent, "label": label, "min": floor, "median": median,
        "share": share[latent], "elsewhere": elsewhere[latent] / max(positions, 1),
        "fires": _fraction(fires), "site": str(dictionary.site)}


def _interval(est: Any, unit: str) -> dict[str, Any]:
    return {"value": est.value, "low": est.low, "high": est.high,
            "min": lower_bound(est.low, est.value, unit),
            "max": upper_bound(est.high, est.value, unit)}


def _fraction(result: Any) -> dict[str, Any]:
    est = result.estimate
    passed = sum(failure is None for failure in result.failures)
    return {"value": est.value, "low": est.low, "high": est.high, "passed": passed,
            "n": est.n, "min": fraction_bound(est.low)}


def user_facts(path: Path) -> list[dict[str, Any]]:
    """Facts from a ``.jsonl`` file of ``{"prompt": ..., "target": ...}`` rows."""
    if not path.is_file():
        raise InterpError(f"--facts {path}: no such file (a .jsonl of {{\"prompt\": ..., "
                          f"\"target\": ...}} rows)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not {"prompt", "target"} <= row.keys():
            raise InterpError(f"{path}:{number}: a fact is a JSON object with 'prompt' and "
                              f"'target' (the expected next token), got {line.strip()!r}")
        rows.append({"prompt": row["prompt"], "target": row["target"]})
    return rows


def explore(model: Any, spec: str, parts: Iterable[str], *, ioi_n: int = 64,
            facts: Sequence[dict[str, Any]] = (), budget: Budget | None = None,
            sae: tuple[str, str] | None = None) -> Findings:
    """Run the chosen parts on ``model`` (an InterpModel) within the budget; ``sae``: a
    dictionary (as given here, as the written suite names it) for the features part."""
    budget = budget or Budget(None)
    found = Findings(spec, model.info.name, model.info.n_layers)
    for part in parts:
        if budget.spent():
            found.left_out[part] = "the time budget ran out before it started"
            continue
        say(f"exploring {part} ...")
        began = time.monotonic()
        if part == "facts":
            rows = [*capitals(111), *facts]  # every country in each of the 3 templates
            source = "the built-in capitals" + (" and your facts" if facts else "")
            explore_facts(model, rows, source, found, budget)
        elif part == "ioi":
            explore_ioi(model, ioi_n, found, budget)
        elif part == "heads":
            explore_heads(model, found)
        elif part == "steering":
            explore_steering(model, found, budget)
        elif part == "features" and sae is not None:
            explore_features(model, *sae, found)
        say(f"{part}: {duration(time.monotonic() - began)}")
    return found


def duration(elapsed: float) -> str:
    """A duration as progress lines give it: ``0.4 s`` below 10 s, ``42 s`` above."""
    if elapsed < 0.05:
        return "<0.1 s"
    return f"{elapsed:.1f} s" if elapsed < 9.95 else f"{elapsed:.0f} s"


def say(text: str) -> None:
    """One line of progress on stderr."""
    print(f"init: {text}", file=sys.stderr, flush=True)
