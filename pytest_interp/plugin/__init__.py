"""plugin layer (the top): pytest-interp's pytest plugin, the ``pytest11`` entry point.

It adds the options and hook specs, and at configure time reads the settings into
``config.stash`` and registers one plugin object per concern, as pytest's own
``junitxml`` and ``skipping`` do: ``collect`` (markers -> expectations), ``series``
(several models), ``fixtures``, ``running`` (seeds, timeout, baseline), ``verdicts``
(expectations after the body), ``outcomes`` (INCONCLUSIVE, DRIFT, the test's record),
``report`` (HTML), ``summary`` (step summary, terminal), ``interrupts`` (SIGTERM ends a run
as Ctrl-C does). State lives in ``config.stash``.

Imports neither torch nor a backend: pytest loads every installed plugin in every session,
and a project that does not use pytest-interp must not pay for torch. Collection is static;
models load when a test that needs one runs.
"""

from __future__ import annotations

import os
import sys

import pytest

from ..pool import ModelPool
from ..registry import KINDS, AnyKind
from . import fixtures
from .collect import INTERP_MODEL, MarkerReader, add_marker_line
from .interrupts import Interrupts
from .items import POOL_KEY
from .options import CONFIG_KEY, add_options, read_config, report_path
from .outcomes import Outcomes
from .report import REPORT_KEY, HtmlReport
from .results import ResultsFile
from .running import Running
from .series import Series
from .session import SessionStart
from .shards import Shards
from .specs import model_id, model_ids, ordered
from .summary import StepSummary, TerminalSummary
from .verdicts import InconclusiveVerdict, VacuousWarning, Verdicts

__all__ = ["CONFIG_KEY", "POOL_KEY", "InconclusiveVerdict", "VacuousWarning", "model_id",
           "model_ids", "ordered"]

KINDS_KEY = pytest.StashKey[list[str]]()  # kinds this session registered through the hook


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from .. import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    interp = config.stash[CONFIG_KEY] = read_config(config)
    add_marker_line(config, INTERP_MODEL)
    for kind in KINDS:
        add_marker_line(config, kind.marker)
    added: list[str] = []
    config.stash[KINDS_KEY] = added

    def registered(kind: AnyKind) -> None:
        added.append(kind.name)
        add_marker_line(config, kind.marker)

    config.add_cleanup(KINDS.on_register(registered))
    config.hook.pytest_interp_register_kinds.call_historic(kwargs={"registry": KINDS})
    _use_threads(interp.threads)
    config.stash[POOL_KEY] = ModelPool(
        memory_bytes=interp.memory_bytes, deterministic=interp.deterministic,
        provide=lambda request: config.hook.pytest_interp_load_model(spec=request.spec,
                                                                     request=request),
        root=config.rootpath,
    )
    plugins: list[object] = [fixtures, SessionStart(), MarkerReader(), Series(), Shards(),
                             Running(), Verdicts(), Outcomes()]
    controller = not hasattr(config, "workerinput") and not config.option.collectonly
    path, results = report_path(config), report_path(config, "results")
    if controller and results is not None:
        plugins.append(ResultsFile(results))
    if controller:
        plugins.append(Interrupts())
    if controller and path is not None:
        report = config.stash[REPORT_KEY] = HtmlReport(path)
        plugins.append(report)
    if controller and os.environ.get("GITHUB_STEP_SUMMARY"):
        plugins.append(StepSummary(os.environ["GITHUB_STEP_SUMMARY"]))
    plugins.append(TerminalSummary())
    for plugin in plugins:
        config.pluginmanager.register(plugin, f"interp-{type(plugin).__name__}-{id(config)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in config.stash.get(KINDS_KEY, []):
        KINDS.unregister(name)


def _use_threads(threads: int | None) -> None:
    """Set the torch CPU thread count (through the environment if torch is not loaded yet)."""
    if threads is None:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
