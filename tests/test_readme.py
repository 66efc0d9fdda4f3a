"""Moved: the README's examples are tested with the documentation site's in tests/test_docs.py.
This module only keeps ``readme_files`` importable from its old place (tests/test_collection.py
and tests/test_checkpoint_workflow.py import it from here); import it from .test_docs instead,
then delete this file."""

from __future__ import annotations

from .test_docs import readme_files

__all__ = ["readme_files"]
