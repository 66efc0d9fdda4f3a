"""plugin layer: the models of a session as given (``--interp-model`` repeated, globs) and their
short ids in test ids. Pure functions: no pytest, no torch."""

from __future__ import annotations

import glob
import re
from collections.abc import Collection
from pathlib import Path

from ..errors import ModelSpecError


def ordered(raw: Collection[str]) -> tuple[str, ...]:
    """Model specs, each once, in the order given; a glob pattern (``ckpt/step_*``) expands
    to the paths it matches, sorted by their ids' trailing numbers when every one has one (a
    plain sort puts step_100 before step_50), else by name. A glob matching nothing is a
    ``ModelSpecError``."""
    found: list[str] = []
    for spec in (str(x).strip() for x in raw):
        if not any(c in spec for c in "*?["):
            found += [spec] if spec else []
            continue
        matches = sorted(glob.glob(spec))
        if not matches:
            where = "" if Path(spec).is_absolute() else \
                f" (relative to the directory pytest runs in, {Path.cwd()})"
            raise ModelSpecError(f"glob {spec!r} matches no file or directory: check the "
                                 f"path{where}")
        numbers = {match: _trailing_number(match) for match in matches}
        if None not in numbers.values():
            matches.sort(key=lambda match: (numbers[match] or 0, match))
        found += matches
    return tuple(dict.fromkeys(found))


def _trailing_number(spec: str) -> int | None:
    """The number a model's id ends with (``step_00200`` -> 200), or None."""
    found = re.search(r"(\d+)$", model_id(spec))
    return int(found.group(1)) if found else None


def model_id(spec: str) -> str:
    """A model's short name in test ids: an alias as is, a path's last part (without
    ``.gguf``), a hub id's name and revision."""
    if Path(spec).suffix == ".gguf" or Path(spec).exists() or spec.startswith((".", "/", "~")):
        name = Path(spec.rstrip("/")).name
        return name[:-len(".gguf")] if name.endswith(".gguf") else name
    return spec.rsplit("/", 1)[-1]


def model_ids(specs: tuple[str, ...]) -> list[str]:
    """Distinct short ids: a path's parent joins its name (``runA-step_00200``) when the
    names alone collide."""
    ids = [model_id(spec) for spec in specs]
    for depth in range(2, 6):
        if len(set(ids)) == len(ids):
            break
        ids = ["-".join(Path(spec.rstrip("/")).parts[-depth:]) if ids.count(short) > 1
               else short for spec, short in zip(specs, ids, strict=True)]
    return ids
