"""top layer: the suite ``init`` writes from what it measured, rendered from Jinja2 templates
(``templates/init``)."""

from __future__ import annotations

import json
import textwrap
from typing import Any

from ..datasets import capitals
from .bounds import MARGINS
from .explore import Findings


def render(found: Findings) -> dict[str, str]:
    """The suite's files: name -> text."""
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("pytest_interp", "templates"),
                      undefined=StrictUndefined, keep_trailing_newline=True,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["f2"] = lambda x: f"{x:.2f}"
    env.filters["py"] = _literal
    values = {"spec": found.spec, "name": found.model_name, "parts": found.parts,
              "left_out": found.left_out, "n_layers": found.n_layers, "margins": MARGINS,
              "h_doc": _heads_doc(found.parts.get("heads", {})), "fact": _snapshot_fact(found)}
    files = dict(found.files)
    files["pytest.ini"] = env.get_template("init/pytest.ini.j2").render(values)
    files["test_interp.py"] = env.get_template("init/test_interp.py.j2").render(values)
    files["test_snapshots.py"] = env.get_template("init/test_snapshots.py.j2").render(values)
    return files


def _literal(value: object) -> str:
    """A Python literal for ``value``; strings in double quotes, as ruff formats them."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def _snapshot_fact(found: Findings) -> str:
    """The prompt whose lens and greedy answer are snapshotted: the first recalled fact."""
    if "facts" in found.parts:
        return str(found.parts["facts"]["first"]["prompt"])
    return str(capitals(1)[0]["prompt"])


def _heads_doc(picked: dict[str, list[dict[str, Any]]]) -> str:
    """The heads test's docstring: "Induction heads: L18H6, L17H4. Previous-token ..."."""
    said = [f"{kind.replace('_', '-').capitalize()} heads: "
            + ", ".join(f"L{x['layer']}H{x['head']}" for x in heads) + "."
            for kind, heads in picked.items() if heads]
    return textwrap.fill(" ".join(said), 88, subsequent_indent="    ")
