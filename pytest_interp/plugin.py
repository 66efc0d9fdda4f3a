"""pytest shell: options and ini keys, markers, fixtures, header and summary.

Imports neither torch nor a backend at module level: pytest loads every installed plugin in
every session, and a project that does not use pytest-interp must not pay for torch.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Collection, Generator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .errors import InterpError
from .markers import EXPECTATION_MARKERS, MARKERS, parse_expectation, parse_interp_model
from .settings import (
    BACKENDS,
    DEFAULT_MEMO_BYTES,
    DEVICES,
    DTYPES,
    REMOTE_NEEDS_NNSIGHT,
    ModelRequest,
    parse_bool,
    parse_bytes,
)

if TYPE_CHECKING:
    from .model import ActivationCache, InterpModel

_OPTIONS: tuple[tuple[str, str, str, str | None], ...] = (
    # (name, ini help, metavar, default)
    ("model", "model spec: alias (smollm2-135m, tiny-random-llama, tiny-random-gpt2), "
              "local HF directory or .gguf file", "SPEC", None),
    ("backend", f"backend: {' | '.join(BACKENDS)}", "NAME", "transformer_lens"),
    ("device", f"device: {' | '.join(DEVICES)}", "NAME", "cpu"),
    ("dtype", f"dtype: {' | '.join(DTYPES)}", "NAME", "float32"),
    ("prepend_bos", "prepend BOS: true | false | auto (the tokenizer's default)", "BOOL", "auto"),
    ("memory", "memory budget of the memoised run cache per model, e.g. 2GiB", "SIZE", "2GiB"),
    ("timeout", "seconds a test's model work may take before it fails (0 = no limit)",
     "SECONDS", "0"),
    ("threads", "torch CPU threads per process: N, or auto (under xdist: cores // workers, "
                "so workers do not oversubscribe the cores; otherwise torch's default)",
     "N", "auto"),
    ("seed", "base seed: each test starts with random, numpy and torch seeded from it and its "
             "node id, so its draws do not depend on test order or xdist worker", "N", "0"),
    ("deterministic", "torch.use_deterministic_algorithms on model load (true | false)",
     "BOOL", "true"),
)


@dataclass(frozen=True)
class InterpConfig:
    """The session's settings, from command line over ini over defaults."""

    spec: str | None
    backend: str
    device: str
    dtype: str
    prepend_bos: bool | None
    memory_bytes: int
    timeout: float = 0.0
    threads: int | None = None  # None: torch's default
    seed: int = 0
    deterministic: bool = True
    remote: bool = False

    def request(self, spec: str | None = None, **overrides: Any) -> ModelRequest:
        """The model request for a test (raises "no model given" if there is no spec)."""
        return ModelRequest(
            spec=spec or self.spec or "", backend=self.backend,  # type: ignore[arg-type]
            device=self.device, dtype=self.dtype, prepend_bos=self.prepend_bos,  # type: ignore[arg-type]
            remote=self.remote,
        ).with_overrides(**overrides)


CONFIG_KEY = pytest.StashKey[InterpConfig]()
POOL_KEY = pytest.StashKey["ModelPool"]()
OVERRIDE_KEY = pytest.StashKey[Any]()  # ModelOverride | None, set at collection
EXPECT_KEY = pytest.StashKey[tuple[Any, ...]]()  # expectations from markers, set at collection


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interp", "pytest-interp: tests of model internals")
    for name, help_text, metavar, default in _OPTIONS:
        flag = "--interp-" + name.replace("_", "-")
        default_text = f"; default {default}" if default is not None else ""
        group.addoption(flag, dest=f"interp_{name}", metavar=metavar, default=None,
                        help=f"{help_text} (ini: interp_{name}{default_text})")
        parser.addini(f"interp_{name}", help_text, default=default)
    group.addoption("--interp-remote", dest="interp_remote", action="store_true", default=None,
                    help="run the model on NDIF through nnsight (remote=True): only its config "
                         "and tokenizer load here; needs an NDIF API key (ini: interp_remote)")
    parser.addini("interp_remote", "run the model on NDIF (true | false)", default="false")
    group.addoption("--interp-report", dest="interp_report", metavar="PATH", default=None,
                    help="write a self-contained HTML report with figures to PATH "
                         "(ini: interp_report)")
    parser.addini("interp_report", "path of the HTML report (relative to the rootdir)")
    for name, default in (("prob", "0.02"), ("logit", "0.1"), ("recovery", "0.05")):
        parser.addini(f"interp_snapshot_{name}_tol",
                      f"interp_snapshot: absolute tolerance on {name} values", default=default)


def _setting(config: pytest.Config, name: str) -> str | None:
    value = config.getoption(f"interp_{name}")
    if value is None:
        value = config.getini(f"interp_{name}")
    return value if value not in ("", None) else None


def _read_config(config: pytest.Config) -> InterpConfig:
    try:
        backend = _setting(config, "backend") or "transformer_lens"
        device = _setting(config, "device") or "cpu"
        dtype = _setting(config, "dtype") or "float32"
        for name, value, choices in (("backend", backend, BACKENDS), ("device", device, DEVICES),
                                     ("dtype", dtype, DTYPES)):
            if value not in choices:
                raise InterpError(
                    f"--interp-{name} {value!r} is not one of: {', '.join(choices)}"
                )
        remote = config.getoption("interp_remote") or parse_bool(
            config.getini("interp_remote"), "interp_remote") or False
        if remote and backend != "nnsight":
            raise InterpError(REMOTE_NEEDS_NNSIGHT)
        memory = _setting(config, "memory")
        timeout = _setting(config, "timeout") or "0"
        try:
            seconds = float(timeout)
        except ValueError:
            seconds = -1.0
        if not seconds >= 0 or seconds == float("inf"):
            raise InterpError(f"--interp-timeout {timeout!r} is not a number of seconds >= 0: "
                              "pass e.g. 300, or 0 for no limit")
        return InterpConfig(
            spec=_setting(config, "model"), backend=backend, device=device, dtype=dtype,
            prepend_bos=parse_bool(_setting(config, "prepend_bos"), "--interp-prepend-bos"),
            memory_bytes=parse_bytes(memory) if memory else DEFAULT_MEMO_BYTES,
            timeout=seconds, threads=_threads(config), seed=_seed(config),
            deterministic=parse_bool(_setting(config, "deterministic"),
                                     "--interp-deterministic") is not False,
            remote=remote,
        )
    except InterpError as exc:
        raise pytest.UsageError(f"pytest-interp: {exc}") from None


def _threads(config: pytest.Config) -> int | None:
    """The torch thread count: a number, or auto (cores // xdist workers on a worker)."""
    raw = (_setting(config, "threads") or "auto").strip().lower()
    if raw == "auto":
        workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
        if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
            return None  # one process, or the user chose
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
        return max(1, cores // workers)
    if not raw.isdigit() or int(raw) < 1:
        raise InterpError(f"--interp-threads {raw!r} is not a thread count: pass a whole "
                          "number >= 1, or auto")
    return int(raw)


def _seed(config: pytest.Config) -> int:
    raw = _setting(config, "seed") or "0"
    try:
        return int(raw)
    except ValueError:
        raise InterpError(f"--interp-seed {raw!r} is not an integer: pass e.g. 0") from None


def _seed_everything(seed: int, nodeid: str, phase: str) -> None:
    """Seed random, numpy and (if loaded) torch from the base seed, the test's node id and
    the phase (fixture setup, call)."""
    import random
    import zlib

    value = zlib.crc32(f"{seed}:{nodeid}:{phase}".encode())
    random.seed(value)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(value)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(value)


def _use_threads(threads: int | None) -> None:
    """Set the torch CPU thread count (through the environment if torch is not loaded yet)."""
    if threads is None:
        return
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)


def pytest_configure(config: pytest.Config) -> None:
    for marker in MARKERS:
        config.addinivalue_line("markers", f"{marker.call}: {marker.help}")
    interp = _read_config(config)
    config.stash[CONFIG_KEY] = interp
    _use_threads(interp.threads)
    from .model import ModelPool  # torch-free module; torch loads with the first model

    config.stash[POOL_KEY] = ModelPool(memory_bytes=interp.memory_bytes,
                                       deterministic=interp.deterministic)
    _start_report(config)


NO_NDIF_KEY = (
    "--interp-remote needs an NDIF API key and none is configured: set NDIF_API_KEY (get a key "
    "at https://login.ndif.us) or save one once with python -c \"import nnsight; "
    "nnsight.CONFIG.set_default_api_key('KEY')\""
)


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once, in one line, if the configured model spec (or NDIF key) cannot be used."""
    interp = session.config.stash[CONFIG_KEY]
    if interp.spec is None and not interp.remote:
        return  # a project not using pytest-interp: import nothing (loading sets HF offline)
    from .backends.loading import resolve_spec, validate

    try:
        if interp.remote:
            from .backends.nnsight import ndif_api_key

            if not ndif_api_key():
                raise InterpError(NO_NDIF_KEY)
        if interp.spec is not None:
            validate(resolve_spec(interp.spec, remote=interp.remote), weights=not interp.remote)
    except InterpError as exc:
        raise pytest.UsageError(f"pytest-interp: {exc}") from None


def _versions() -> str:
    parts = []
    for dist in ("torch", "transformers", "transformer-lens", "nnsight", "syrupy"):
        try:
            parts.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            parts.append(f"{dist} missing")
    return ", ".join(parts)


def pytest_report_header(config: pytest.Config) -> list[str]:
    interp = config.stash[CONFIG_KEY]
    bos = "auto" if interp.prepend_bos is None else str(interp.prepend_bos).lower()
    device = "remote (NDIF)" if interp.remote else interp.device
    return [
        f"interp: model {interp.spec or '(none: set --interp-model)'}, backend {interp.backend}, "
        f"device {device}, dtype {interp.dtype}, prepend_bos {bos}, "
        f"memo {interp.memory_bytes / 1024**3:.2f} GiB, threads "
        f"{interp.threads or 'torch default'}, seed {interp.seed}, deterministic "
        f"{str(interp.deterministic).lower()}",
        f"interp libraries: {_versions()}",
    ]


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, Any]:
    """Read interp markers into frozen dataclasses; a bad one is a collection error."""
    result = yield
    items = result if isinstance(result, list) else [result]
    for item in items:
        if isinstance(item, pytest.Function):
            _read_marks(item)
    return result


def _read_marks(item: pytest.Function) -> None:
    mark = item.get_closest_marker("interp_model")
    try:
        item.stash[OVERRIDE_KEY] = (
            parse_interp_model(mark.args, dict(mark.kwargs)) if mark is not None else None
        )
    except InterpError as exc:
        raise pytest.Collector.CollectError(
            f"{item.nodeid}: @pytest.mark.interp_model: {exc}"
        ) from None
    expectations = []
    for marker in EXPECTATION_MARKERS:
        for mark in item.iter_markers(marker.name):
            try:
                expectation = parse_expectation(
                    marker, mark.args, dict(mark.kwargs), item.config.rootpath
                )
                expectation.validate(_model_for(item))
            except InterpError as exc:
                raise pytest.Collector.CollectError(
                    f"{item.nodeid}: @pytest.mark.{marker.name}: {exc}"
                ) from None
            expectations.append(expectation)
    item.stash[EXPECT_KEY] = tuple(expectations)


def _model_for(item: pytest.Item) -> InterpModel:
    return item.config.stash[POOL_KEY].get(_request_for(item))


def _request_for(item: pytest.Item) -> ModelRequest:
    interp = item.config.stash[CONFIG_KEY]
    override = item.stash.get(OVERRIDE_KEY, None)
    if override is None:
        return interp.request()
    return interp.request(
        override.spec, backend=override.backend, device=override.device,
        dtype=override.dtype, prepend_bos=override.prepend_bos,
    )


@pytest.fixture
def interp_model(request: pytest.FixtureRequest) -> InterpModel:
    """The model under test (one instance per spec/backend/device/dtype per session)."""
    try:
        return _model_for(request.node)
    except InterpError as exc:
        message = f"pytest-interp: {exc}"
    pytest.fail(message, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture
def interp_cache(
    interp_model: InterpModel,
) -> Callable[..., ActivationCache]:
    """``interp_cache(prompt)``: the memoised activations of one run, read-only."""

    def cache(prompt: str, *, components: Collection[str] | None = None) -> ActivationCache:
        __tracebackhide__ = True
        return interp_model.cache(prompt, components=components)  # type: ignore[arg-type]

    return cache


@pytest.fixture
def interp_snapshot(snapshot: Any, request: pytest.FixtureRequest) -> Any:
    """syrupy's ``snapshot`` storing results as readable text, compared within tolerances
    (ini ``interp_snapshot_{prob,logit,recovery}_tol``) and diffed in model terms."""
    from .snapshot import InterpSnapshotExtension, with_tolerance

    config = request.config
    tolerances = {}
    for name in ("prob", "logit", "recovery"):
        raw = config.getini(f"interp_snapshot_{name}_tol")
        try:
            tolerances[name] = float(raw)
        except ValueError:
            pytest.fail(f"pytest-interp: interp_snapshot_{name}_tol = {raw!r} is not a number: "
                        "set a non-negative number such as 0.05", pytrace=False)
        if not tolerances[name] >= 0:
            pytest.fail(f"pytest-interp: interp_snapshot_{name}_tol = {raw!r} is negative: "
                        "set a non-negative number such as 0.05", pytrace=False)
    extension = with_tolerance(InterpSnapshotExtension, **tolerances)
    extension.details = bool(getattr(config.option, "include_snapshot_details", False))
    try:
        extension.dtype = _request_for(request.node).dtype
    except InterpError:
        pass  # no model configured: float32 tolerances
    return snapshot.use_extension(extension)


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """After the test body passes, check the expectations its markers declared."""
    result = yield
    expectations = pyfuncitem.stash.get(EXPECT_KEY, ())
    if expectations:
        failures = []
        try:
            model = _model_for(pyfuncitem)
            for expectation in expectations:
                text = expectation.check(model)
                if text is not None:
                    failures.append(text)
        except InterpError as exc:
            failures.append(f"pytest-interp: {exc}")
        if failures:
            pytest.fail("\n\n".join(failures), pytrace=False)
    return result


REPORT_KEY = pytest.StashKey[Any]()  # _Report | None


@dataclass
class _Report:
    path: Path
    start: float
    entries: dict[str, Any]  # nodeid -> report.html.Entry


def _report_path(config: pytest.Config) -> Path | None:
    raw = config.getoption("interp_report") or config.getini("interp_report")
    if not raw:
        return None
    path = Path(raw)
    return path if path.is_absolute() else (
        Path.cwd() / path if config.getoption("interp_report") else config.rootpath / path)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _seed_everything(item.config.stash[CONFIG_KEY].seed, item.nodeid, "setup")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """Record the results a test produces, for the report's figures."""
    from .record import recording

    interp = item.config.stash[CONFIG_KEY]
    timeout = interp.timeout
    _seed_everything(interp.seed, item.nodeid, "call")
    with recording() as items:
        try:
            with _deadline(timeout):
                return (yield)
        except _Timeout:
            pytest.fail(f"pytest-interp: the test ran past --interp-timeout={timeout:g}s and was "
                        "stopped: restrict the sweep (layers=, positions=) or raise the limit",
                        pytrace=False)
        finally:
            item.stash[RECORDED_KEY] = list(items)


class _Timeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` swallows it."""


@contextmanager
def _deadline(seconds: float) -> Generator[None, None, None]:
    """Raise _Timeout in the main thread after ``seconds`` (0 = never; Unix main thread only)."""
    import signal
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() \
            or not hasattr(signal, "setitimer"):
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


RECORDED_KEY = pytest.StashKey[list[Any]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, Any]:
    """Attach the figures (HTML) to the call report; they travel with it under xdist."""
    report = yield
    if call.when == "call" and _report_path(item.config) is not None:
        from .report.figures import figure

        html = "".join(figure(x) for x in item.stash.get(RECORDED_KEY, []))
        if html:
            report.user_properties.append(("interp_figures", html))
    return report


_ACTIVE: list[_Report] = []  # a stack: pytester runs sessions inside sessions


def _start_report(config: pytest.Config) -> None:
    """Collect report entries when a report is asked for (on the controller, not workers)."""
    path = _report_path(config)
    if path is not None and not hasattr(config, "workerinput"):
        import time

        state = _Report(path, time.perf_counter(), {})
        config.stash[REPORT_KEY] = state
        _ACTIVE.append(state)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(REPORT_KEY, None)
    if state is not None and state in _ACTIVE:
        _ACTIVE.remove(state)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _ACTIVE or (report.when != "call" and not report.failed and not report.skipped):
        return
    from .report.html import Entry

    entry = _ACTIVE[-1].entries.setdefault(report.nodeid, Entry(report.nodeid))
    entry.outcome = "failed" if report.failed else report.outcome
    entry.duration += report.duration
    if report.failed or report.skipped:
        entry.failure += report.longreprtext
    entry.figures += [v for k, v in report.user_properties if k == "interp_figures"]


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(REPORT_KEY, None)
    if state is None:
        return
    import time

    from .report.html import write_report

    write_report(state.path, list(state.entries.values()),
                 pytest_report_header(session.config), time.perf_counter() - state.start)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    state = config.stash.get(REPORT_KEY, None)
    if state is not None:
        terminalreporter.write_line(f"interp: report written to {state.path}")
    pool = config.stash.get(POOL_KEY, None)
    if pool is None or not pool.loaded():
        return
    for model in pool.loaded():
        info, stats = model.info, model.memo.stats
        terminalreporter.write_line(
            f"interp: {info.name} rev {info.revision} ({info.architecture}, {info.n_layers} "
            f"layers) via {info.backend}: {stats.misses} runs computed, {stats.hits} memo hits, "
            f"{model.memo.nbytes / 1024**2:.1f} MiB held"
        )
