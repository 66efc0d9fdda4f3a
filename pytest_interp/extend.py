"""expectation layer: the API for writing an expectation kind in a conftest or a package, in one
module: the base classes (``Expectation``, ``ExpectationKind``, ``SnapshotCodec``), what a failure
and a snapshot change are made of, the model's sites, and the stored-value checks and comparisons
the built-in codecs use. The README's ``norm`` kind imports only from here; a built-in kind is one
module of ``pytest_interp.kinds``, its probe and one registry line (CONTRIBUTING.md). """

from __future__ import annotations

from .codec import (
    Change,
    SnapshotCodec,
    SnapshotFormatError,
    Tolerances,
    fmt,
    is_int,
    is_number,
    is_numbers,
    is_opt_str,
    is_str,
    is_strs,
    is_top,
    number_change,
    rounded,
    schema,
    text_change,
    top_changes,
)
from .errors import InterpError
from .expectation import Drift, Expectation, ExpectationKind, Inconclusive
from .sites import Component, Site

__all__ = ["Change", "Component", "Drift", "Expectation", "ExpectationKind", "Inconclusive",
           "InterpError", "Site", "SnapshotCodec", "SnapshotFormatError", "Tolerances", "fmt",
           "is_int", "is_number", "is_numbers", "is_opt_str", "is_str", "is_strs", "is_top",
           "number_change", "rounded", "schema", "text_change", "top_changes"]
