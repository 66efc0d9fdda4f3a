"""results layer: prompt datasets: rows of marker arguments, from a list, a JSONL/CSV file or a
generator.

A row is a dict of the marker's argument names (``prompt``, ``clean``/``corrupted``,
``answer``/``foil``, ``target``...). Keys a marker does not take are kept as labels; a row
may carry ``roles``, token positions by name (``{"S2": [" John", 1], "END": -1}``: the
second occurrence of the token " John", the last position), which markers name in
``position=``. Built-in generators are pure Python (no model): ``ioi`` and ``capitals``,
also by name in markers (``prompts="ioi:64"``).
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import InterpError

Row = dict[str, Any]
Role = int | tuple[str, int]  # a position, or (token string, occurrence from 0)

GENERATORS: dict[str, Callable[..., list[Row]]] = {}


def generator(func: Callable[..., list[Row]]) -> Callable[..., list[Row]]:
    """Register ``func(n=..., seed=...)`` as a dataset usable as ``prompts="name:n"``."""
    GENERATORS[func.__name__] = func
    return func


# Wang et al. 2022 (IOI), their BABA templates; ABBA swaps the first two names.
IOI_TEMPLATES = (
    "Then, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} had a lot of fun at the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} were working at the {PLACE}. {B} decided to give a {OBJECT} to",
    "Then, {B} and {A} were thinking about going to the {PLACE}. {B} wanted to give a "
    "{OBJECT} to",
    "Then, {B} and {A} had a long argument, and afterwards {B} said to",
    "After {B} and {A} went to the {PLACE}, {B} gave a {OBJECT} to",
    "When {B} and {A} got a {OBJECT} at the {PLACE}, {B} decided to give it to",
    "When {B} and {A} got a {OBJECT} at the {PLACE}, {B} decided to give the {OBJECT} to",
    "While {B} and {A} were working at the {PLACE}, {B} gave a {OBJECT} to",
    "While {B} and {A} were commuting to the {PLACE}, {B} gave a {OBJECT} to",
    "After the lunch, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Afterwards, {B} and {A} went to the {PLACE}. {B} gave a {OBJECT} to",
    "Then, {B} and {A} had a long argument. Afterwards {B} said to",
    "The {PLACE} {B} and {A} went to had a {OBJECT}. {B} gave it to",
    "Friends {B} and {A} found a {OBJECT} at the {PLACE}. {B} gave it to",
)
IOI_NAMES = ("Mary", "John", "Tom", "James", "Dan", "Sarah", "Paul", "Anna", "Mike", "Lisa",
             "David", "Emma", "Kate", "Mark", "Alice", "Jack", "Sam", "Amy", "Ben", "Laura",
             "Peter", "Rachel", "Steve", "Tim", "Jane", "Adam", "Kevin", "Ryan", "Eric", "Rose",
             "Grace", "Henry", "Linda", "Frank", "Anne", "Joe")
IOI_PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "house",
              "station")
IOI_OBJECTS = ("ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack")


@generator
def ioi(n: int = 64, seed: int = 0) -> list[Row]:
    """``n`` indirect-object-identification rows (Wang et al. 2022): templates x names, half
    ABBA and half BABA. ``prompt``/``clean`` ends where the model should name the indirect
    object; ``corrupted`` replaces the subject's second mention (S2) by a third name (their
    ABC dataset), so the pair has the same length when names are single tokens.
    ``answer`` = indirect object, ``foil`` = subject; roles IO, S1, S2, END."""
    _count(n)
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        template = IOI_TEMPLATES[i % len(IOI_TEMPLATES)]
        io, s, other = rng.sample(IOI_NAMES, 3)
        order = "ABBA" if i % 2 == 0 else "BABA"
        fill = {"PLACE": rng.choice(IOI_PLACES), "OBJECT": rng.choice(IOI_OBJECTS)}
        first, second = (io, s) if order == "ABBA" else (s, io)
        shaped = template.replace("{B} and {A}", f"{first} and {second}", 1)
        clean = shaped.format(B=s, **fill)
        head, _, tail = shaped.rpartition("{B}")  # S2 is the last mention of the subject
        corrupted = (head.format(B=s, **fill) + other + tail.format(B=s, **fill))
        rows.append({
            "prompt": clean, "clean": clean, "corrupted": corrupted,
            "answer": f" {io}", "foil": f" {s}", "io": io, "s": s, "order": order,
            "template": i % len(IOI_TEMPLATES),
            "roles": {"IO": (f" {io}", 0), "S1": (f" {s}", 0), "S2": (f" {s}", 1), "END": -1},
        })
    return rows


CAPITALS = (("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
            ("Japan", "Tokyo"), ("China", "Beijing"), ("Russia", "Moscow"), ("Egypt", "Cairo"),
            ("England", "London"), ("Greece", "Athens"), ("Austria", "Vienna"),
            ("Norway", "Oslo"), ("Poland", "Warsaw"), ("Portugal", "Lisbon"),
            ("Ireland", "Dublin"), ("Sweden", "Stockholm"), ("Denmark", "Copenhagen"),
            ("Hungary", "Budapest"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Cuba", "Havana"),
            ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Syria", "Damascus"),
            ("Finland", "Helsinki"), ("Belgium", "Brussels"), ("Chile", "Santiago"),
            ("Canada", "Ottawa"), ("Australia", "Canberra"), ("the Philippines", "Manila"),
            ("Scotland", "Edinburgh"), ("Wales", "Cardiff"), ("the Netherlands", "Amsterdam"),
            ("the Czech Republic", "Prague"), ("Bulgaria", "Sofia"), ("Afghanistan", "Kabul"),
            ("South Korea", "Seoul"))
CAPITAL_TEMPLATES = ("The capital of {country} is", "{country}'s capital city is",
                     "The capital city of {country} is called")


@generator
def capitals(n: int = len(CAPITALS), seed: int = 0) -> list[Row]:
    """``n`` country -> capital facts (up to one per country and template): ``prompt``,
    ``target``/``answer``/``expect`` = " Capital", ``foil`` = another country's capital."""
    _count(n, most=len(CAPITALS) * len(CAPITAL_TEMPLATES))
    rng = random.Random(seed)
    pairs = [(c, t) for t in CAPITAL_TEMPLATES for c in CAPITALS]  # template by template
    rows = []
    for (country, capital), template in pairs[:n]:
        foil = rng.choice([cap for _, cap in CAPITALS if cap != capital])
        rows.append({"prompt": template.format(country=country), "target": f" {capital}",
                     "answer": f" {capital}", "expect": f" {capital}", "foil": f" {foil}",
                     "country": country})
    return rows


def _count(n: object, most: int | None = None) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InterpError(f"n must be a positive int, got {n!r}")
    if most is not None and n > most:
        raise InterpError(f"n={n} is more than the {most} rows this generator has")


def load(source: object, root: Path, fields: Sequence[str]) -> list[Row]:
    """The rows of ``source``: a list of strings, dicts or tuples (a string or tuple fills
    ``fields`` in order), ``"name:n"`` of a generator, a ``.jsonl``/``.csv`` file (taken
    from ``root`` when relative) whose keys/columns are argument names, or a ``.txt`` file of
    one ``fields[0]`` per line."""
    if isinstance(source, str) and source.split(":")[0] in GENERATORS \
            and not source.endswith((".jsonl", ".csv", ".txt")):
        name, _, n = source.partition(":")
        if n and not n.isdigit():
            raise InterpError(f"prompts={source!r}: write {name}:N with N a number of rows")
        rows = GENERATORS[name](**({"n": int(n)} if n else {}))
    elif isinstance(source, str) and re.fullmatch(r"[A-Za-z_]\w*(:\d*)?", source):
        raise InterpError(f"prompts={source!r} is no dataset generator or file: use "
                          f"{', '.join(g + ':N' for g in GENERATORS)}, or a .jsonl, .csv or "
                          ".txt file")
    elif isinstance(source, str | Path):
        rows = _read_file(Path(source) if Path(source).is_absolute() else root / source, fields)
    elif isinstance(source, Iterable) and not isinstance(source, Mapping):
        rows = [_row(item, fields, i) for i, item in enumerate(source)]
    else:
        raise InterpError(f"prompts must be a list of prompts or rows, a .jsonl/.csv file or "
                          f"one of {', '.join(repr(g + ':N') for g in GENERATORS)}, got "
                          f"{source!r}")
    if not rows:
        raise InterpError("prompts= has no rows")
    return rows


def _row(item: object, fields: Sequence[str], i: int) -> Row:
    if isinstance(item, str):
        return {fields[0]: item}
    if isinstance(item, Mapping):
        if not all(isinstance(k, str) for k in item):
            raise InterpError(f"prompts row {i}: keys must be argument names (strings)")
        return dict(item)
    if isinstance(item, tuple | list):
        if len(item) > len(fields):
            raise InterpError(f"prompts row {i} has {len(item)} values but a row can give at "
                              f"most ({', '.join(fields)}): use a dict")
        return dict(zip(fields, item, strict=False))
    raise InterpError(f"prompts row {i} is {item!r}: give a string, a dict of arguments or a "
                      f"tuple ({', '.join(fields)})")


def _read_file(path: Path, fields: Sequence[str]) -> list[Row]:
    if path.suffix not in (".jsonl", ".csv", ".txt"):
        raise InterpError(f"prompts file {str(path)!r} must be .jsonl, .csv or .txt")
    if not path.is_file():
        raise InterpError(f"prompts file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".txt":
        return [{fields[0]: line} for line in text.splitlines() if line.strip()]
    if path.suffix == ".csv":
        return [dict(r) for r in csv.DictReader(text.splitlines())]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InterpError(f"{path.name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InterpError(f"{path.name}:{number}: a row must be a JSON object of "
                              "arguments")
        rows.append(row)
    return rows


def role_position(tokens: Sequence[str], role: Role, name: str) -> int:
    """The position a row's role names in its tokens (an occurrence of a token, or an int)."""
    if isinstance(role, int):
        n = len(tokens)
        if not -n <= role < n:
            raise InterpError(f"role {name!r} is position {role}, outside the {n} tokens")
        return role % n
    token, occurrence = role
    found = [i for i, t in enumerate(tokens) if t == token]
    if len(found) <= occurrence:
        raise InterpError(f"role {name!r} is occurrence {occurrence} of {token!r}, which the "
                          f"prompt has {len(found)} time(s) (tokens: {list(tokens)})")
    return found[occurrence]
