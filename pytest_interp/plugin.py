"""pytest shell: options and ini keys, markers -> expectations, fixtures, header and outcomes.

Imports neither torch nor a backend at module level: pytest loads every installed plugin in
every session, and a project that does not use pytest-interp must not pay for torch.
Collection is static: it reads markers into expectations and checks what needs no model;
models load when a test that needs one runs.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Collection, Generator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import pytest

from .dataset_expectation import DatasetExpectation, Inconclusive
from .errors import InterpError
from .expectation import Expectation, ExpectationKind, Marker
from .model import ActivationCache, InterpModel, ModelPool
from .record import SnapshotDiff, SnapshotNoise
from .registry import KINDS, AnyKind
from .report.html import Entry
from .settings import (
    BACKENDS,
    DEVICES,
    DRIFTS,
    DTYPES,
    INCONCLUSIVES,
    REMOTE_NEEDS_NNSIGHT,
    BackendName,
    DeviceName,
    Drifts,
    DtypeName,
    Inconclusives,
    ModelOverride,
    ModelRequest,
    check_budget,
    parse_bool,
    parse_bytes,
)

INTERP_MODEL = Marker(
    "interp_model", ModelOverride,
    "run this test (class, module) on another model or backend; spec is an alias, "
    "a local HF directory or a .gguf file.",
)


@dataclass(frozen=True)
class InterpConfig:
    """The session's settings, from command line over ini over defaults."""

    spec: str | None  # the first model
    backend: BackendName = "transformer_lens"
    device: DeviceName = "cpu"
    dtype: DtypeName = "float32"
    prepend_bos: bool | None = None
    memory_bytes: int = 2 * 1024**3
    timeout: float = 0.0
    threads: int | None = None  # None: torch's default
    seed: int = 0
    deterministic: bool = True
    remote: bool = False
    tolerances: dict[str, float] = field(default_factory=dict)
    noise_floor: tuple[str, ...] = ()  # perturbations measured when a snapshot is written
    noise_k: float = 3.0
    calibrate: bool = False  # re-measure the floors of unchanged snapshots too
    inconclusive: Inconclusives = "fail"  # the outcome of an INCONCLUSIVE dataset verdict
    controls: bool = False  # re-check passing expectations on a re-initialised model
    specs: tuple[str, ...] = ()  # every model, in order (tests are parametrized if > 1)
    baseline: str | None = None  # results are compared with this model's
    max_drift: float = 1.0  # a snapshot's drift budget, in noise floors
    drift: Drifts = "fail"  # the outcome of a snapshot over its budget: FAIL or DRIFT
    writer: str | None = None  # with --snapshot-update in a series: the model that writes

    def request(self, override: ModelOverride | None = None,
                spec: str | None = None) -> ModelRequest:
        """The model request for a test: the session's (``spec``: the test's model of a
        series), changed by its ``interp_model`` marker (raises "no model given" if none
        names a model)."""
        if override is None:
            return ModelRequest(spec=spec or self.spec or "", backend=self.backend,
                                device=self.device,
                                dtype=self.dtype, prepend_bos=self.prepend_bos,
                                remote=self.remote)
        return ModelRequest(
            spec=override.spec, backend=override.backend or self.backend,
            device=override.device or self.device, dtype=override.dtype or self.dtype,
            prepend_bos=self.prepend_bos if override.prepend_bos is None
            else override.prepend_bos, remote=self.remote,
        )


CONFIG_KEY = pytest.StashKey[InterpConfig]()
POOL_KEY = pytest.StashKey[ModelPool]()
OVERRIDE_KEY = pytest.StashKey[ModelOverride | None]()  # the interp_model marker, if any
EXPECT_KEY = pytest.StashKey[tuple[tuple[AnyKind, Expectation[Any]], ...]]()
RECORDED_KEY = pytest.StashKey[list[object]]()  # results a test produced, for the report
REPORT_KEY = pytest.StashKey["_Report"]()
KINDS_KEY = pytest.StashKey[list[str]]()  # kinds this session registered through the hook


# ---------------------------------------------------------------------------
# Options: typed by argparse on the command line and by pytest in ini files


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising InterpError."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InterpError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def _threads_value(text: str) -> int | Literal["auto"]:
    raw = str(text).strip().lower()
    if raw == "auto":
        return "auto"
    if not raw.isdigit() or int(raw) < 1:
        raise InterpError(f"{text!r} is not a thread count: pass a whole number >= 1, or auto")
    return int(raw)


def _seconds_value(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise InterpError(f"{text!r} is not a number of seconds >= 0: pass e.g. 300, or 0 for "
                          "no limit")
    return seconds


def _bool_or_auto(text: str) -> bool | Literal["auto"]:
    value = parse_bool(text, "")
    return "auto" if value is None else value


DEFAULT_NOISE_FLOOR = "backend, bfloat16, noise:1e-3"


def _perturbations(text: str) -> tuple[str, ...]:
    """``backend, bfloat16, noise:1e-3`` (or ``none``) as a tuple."""
    items = tuple(x.strip() for x in str(text).split(",") if x.strip())
    if items == ("none",):
        return ()
    for item in items:
        kind, _, rate = item.partition(":")
        ok = item in ("backend", "bfloat16") or (kind == "noise" and _is_rate(rate))
        if not ok:
            raise InterpError(f"{item!r} is not a perturbation: use backend, bfloat16, noise:R "
                              "(R a relative size such as 1e-3), or none")
    return items


def _is_rate(text: str) -> bool:
    try:
        return 0 < float(text) < 1
    except ValueError:
        return False


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise InterpError(f"{text!r} is not a positive number: pass e.g. 3")
    return value


def _memory_value(text: str) -> int:
    return parse_bytes(text, "")


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    return check_budget(value, "--interp-max-drift")


_TOLERANCES = (("prob", 0.02), ("logit", 0.1), ("recovery", 0.05))


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("interp", "pytest-interp: tests of model internals")

    def option(name: str, help_text: str, metavar: str, ini_type: Any, default: Any,
               **cli: Any) -> None:
        flag = "--interp-" + name.replace("_", "-")
        shown = {True: "true", False: "false"}.get(default, default)
        group.addoption(flag, dest=f"interp_{name}", metavar=metavar, default=None,
                        help=f"{help_text} (ini: interp_{name}; default {shown})", **cli)
        parser.addini(f"interp_{name}", help_text, type=ini_type, default=default)

    group.addoption("--interp-model", dest="interp_model", metavar="SPEC", action="append",
                    default=None,
                    help="model spec: alias (smollm2-135m, tiny-random-llama), local HF "
                         "directory, .gguf file or hub id org/name[@revision]; repeat it to "
                         "run every test that uses a model on each (ini: interp_model, "
                         "whitespace-separated)")
    parser.addini("interp_model", "model specs (whitespace-separated; quote a path with spaces)",
                  type="args", default=[])
    option("baseline", "compare every result a test computes with the same probe on this model, "
                       "as a snapshot written on it would be (same codecs and noise floor)",
           "SPEC", "string", "")
    option("backend", f"backend: {' | '.join(BACKENDS)}", "NAME", BackendName,
           "transformer_lens", choices=BACKENDS)
    option("device", f"device: {' | '.join(DEVICES)}", "NAME", DeviceName, "cpu",
           choices=DEVICES)
    option("dtype", f"dtype: {' | '.join(DTYPES)}", "NAME", DtypeName, "float32",
           choices=DTYPES)
    option("prepend_bos", "prepend BOS: true | false | auto (the tokenizer's default)", "BOOL",
           bool | Literal["auto"], "auto", type=_arg(_bool_or_auto))
    option("memory", "memory budget of the memoised run cache per model, e.g. 2GiB", "SIZE",
           "string", "2GiB", type=_arg(_memory_value))
    option("timeout", "seconds a test's model work may take before it fails (0 = no limit)",
           "SECONDS", float, 0.0, type=_arg(_seconds_value))
    option("threads", "torch CPU threads per process: N, or auto (under xdist: cores // "
                      "workers, so workers do not oversubscribe the cores; otherwise torch's "
                      "default)", "N", int | Literal["auto"], "auto", type=_arg(_threads_value))
    option("seed", "base seed: each test starts with random, numpy and torch seeded from it and "
                   "its node id, so its draws do not depend on test order or xdist worker", "N",
           int, 0, type=int)
    option("deterministic", "torch.use_deterministic_algorithms on model load (true | false)",
           "BOOL", bool, True, type=_arg(lambda text: parse_bool(text, "") is not False))
    group.addoption("--interp-remote", dest="interp_remote", action="store_true", default=None,
                    help="run the model on NDIF through nnsight (remote=True): only its config "
                         "and tokenizer load here; needs an NDIF API key (ini: interp_remote)")
    parser.addini("interp_remote", "run the model on NDIF (true | false)", type=bool,
                  default=False)
    group.addoption("--interp-report", dest="interp_report", metavar="PATH", default=None,
                    help="write a self-contained HTML report with figures to PATH "
                         "(ini: interp_report)")
    parser.addini("interp_report", "path of the HTML report (relative to the rootdir)")
    for name, default in _TOLERANCES:
        parser.addini(f"interp_snapshot_{name}_tol",
                      f"interp_snapshot: absolute tolerance on {name} values", type=float,
                      default=default)
    option("noise_floor", "what a snapshot's noise floor is measured under when it is "
                          "written: a comma list of backend, bfloat16, noise:R, or none",
           "LIST", "string", DEFAULT_NOISE_FLOOR, type=_arg(_perturbations))
    option("noise_k", "a noise floor is k x the largest deviation the perturbations cause",
           "K", float, 3.0, type=_arg(_positive))
    option("max_drift", "how far a snapshot (or a result against --interp-baseline) may move, "
                        "in noise floors, and still pass with its diff shown (1: nothing "
                        "beyond the noise floor); interp_snapshot(max_drift=N) sets one "
                        "snapshot's", "N", float, 1.0, type=_arg(_budget))
    option("drift", "the outcome of a snapshot over its drift budget: fail, or report (its own "
                    "outcome DRIFT, which does not fail the run)", "OUTCOME", Drifts, "fail",
           choices=DRIFTS)
    option("snapshot_model", "with --snapshot-update in a series: the model (spec or id) whose "
                             "results write each test's one snapshot", "SPEC", "string", "")
    option("inconclusive", "the outcome of a test whose dataset verdict is INCONCLUSIVE (its "
                           "interval straddles the bound): fail | pass | skip", "OUTCOME",
           Inconclusives, "fail", choices=INCONCLUSIVES)
    group.addoption("--interp-controls", dest="interp_controls", action="store_true",
                    default=None,
                    help="check every passing expectation again on a randomly re-initialised "
                         "copy of the model (same config, seeded): one that passes there too "
                         "is VACUOUS, it does not depend on what the model learned (ini: "
                         "interp_controls)")
    parser.addini("interp_controls", "check expectations on a re-initialised control model "
                                     "(true | false)", type=bool, default=False)
    group.addoption("--interp-calibrate", dest="interp_calibrate", action="store_true",
                    default=False,
                    help="with --snapshot-update: re-measure the noise floor of every snapshot "
                         "asserted, and rewrite those whose floor changed")


def _setting(config: pytest.Config, name: str) -> Any:
    """The command line's value, else the ini file's (typed), else the default."""
    value = config.getoption(f"interp_{name}")
    return config.getini(f"interp_{name}") if value is None else value


def _read_config(config: pytest.Config) -> InterpConfig:
    try:
        backend, remote = _setting(config, "backend"), bool(_setting(config, "remote"))
        if remote and backend != "nnsight":
            raise InterpError(REMOTE_NEEDS_NNSIGHT)
        memory = _setting(config, "memory")
        bos = _setting(config, "prepend_bos")
        tolerances = {}
        for name, _ in _TOLERANCES:
            value = config.getini(f"interp_snapshot_{name}_tol")
            if not value >= 0:
                raise InterpError(f"interp_snapshot_{name}_tol = {value!r} is negative: set a "
                                  "non-negative number such as 0.05")
            tolerances[name] = float(value)
        specs = _model_specs(config)
        return InterpConfig(
            spec=specs[0] if specs else None, specs=specs, backend=backend,
            device=_setting(config, "device"), dtype=_setting(config, "dtype"),
            prepend_bos=None if bos == "auto" else bool(bos),
            memory_bytes=memory if isinstance(memory, int) else parse_bytes(memory),
            timeout=float(_setting(config, "timeout")), threads=_threads(config),
            seed=int(_setting(config, "seed")),
            deterministic=bool(_setting(config, "deterministic")), remote=remote,
            tolerances=tolerances, noise_floor=_noise_floor(config),
            noise_k=float(_setting(config, "noise_k")), calibrate=_calibrate(config),
            inconclusive=_setting(config, "inconclusive"),
            controls=bool(_setting(config, "controls")),
            baseline=_setting(config, "baseline") or None,
            max_drift=_max_drift(config), drift=_setting(config, "drift"),
            writer=_writer(config, specs),
        )
    except InterpError as exc:
        raise pytest.UsageError(f"pytest-interp: {exc}") from None


def _model_specs(config: pytest.Config) -> tuple[str, ...]:
    """The models, command line over ini, in order (``ordered``)."""
    return ordered(config.getoption("interp_model") or config.getini("interp_model"))


def ordered(raw: Collection[str]) -> tuple[str, ...]:
    """Model specs, each once, in the order given; a glob pattern (``ckpt/step_*``) expands
    to the paths it matches, sorted by their ids' trailing numbers when every one has one (a
    plain sort puts step_100 before step_50), else by name. A glob matching nothing is a
    ``ModelSpecError``."""
    import glob

    from .errors import ModelSpecError

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
    import re

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


def _noise_floor(config: pytest.Config) -> tuple[str, ...]:
    value = _setting(config, "noise_floor")
    return value if isinstance(value, tuple) else _perturbations(value)


def _max_drift(config: pytest.Config) -> float:
    return check_budget(_setting(config, "max_drift"), "interp_max_drift")


def _writer(config: pytest.Config, specs: tuple[str, ...]) -> str | None:
    """With --snapshot-update in a series, the spec of the model that writes (named by spec
    or id); a series without one is refused: each test has one snapshot."""
    named = _setting(config, "snapshot_model") or None
    if not getattr(config.option, "update_snapshots", False) or len(specs) < 2:
        return None
    ids = model_ids(specs)
    if named is None:
        raise InterpError(f"--snapshot-update with {len(specs)} models would write each test's "
                          "one snapshot once per model: name the model that writes with "
                          f"--interp-snapshot-model (one of {', '.join(ids)})")
    for spec, short in zip(specs, ids, strict=True):
        if named in (spec, short):
            return spec
    raise InterpError(f"--interp-snapshot-model {named!r} is not a model of this series: use one "
                      f"of {', '.join(ids)}")


def _calibrate(config: pytest.Config) -> bool:
    if not config.getoption("interp_calibrate"):
        return False
    if not getattr(config.option, "update_snapshots", False):
        raise InterpError("--interp-calibrate rewrites snapshot files: add --snapshot-update")
    return True


def _threads(config: pytest.Config) -> int | None:
    """The torch thread count: a number, or auto (cores // xdist workers on a worker)."""
    raw = _setting(config, "threads")
    if raw != "auto":
        return int(raw)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None  # one process, or the user chose
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return max(1, cores // workers)


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


def _add_marker_line(config: pytest.Config, marker: Marker) -> None:
    config.addinivalue_line("markers", f"{marker.call}: {marker.help}")


def pytest_configure(config: pytest.Config) -> None:
    interp = _read_config(config)
    config.stash[CONFIG_KEY] = interp
    _add_marker_line(config, INTERP_MODEL)
    for kind in KINDS:
        _add_marker_line(config, kind.marker)
    added: list[str] = []
    config.stash[KINDS_KEY] = added

    def registered(kind: AnyKind) -> None:
        added.append(kind.name)
        _add_marker_line(config, kind.marker)

    config.add_cleanup(KINDS.on_register(registered))
    config.hook.pytest_interp_register_kinds.call_historic(kwargs={"registry": KINDS})
    _use_threads(interp.threads)
    config.stash[POOL_KEY] = ModelPool(
        memory_bytes=interp.memory_bytes, deterministic=interp.deterministic,
        provide=lambda request: config.hook.pytest_interp_load_model(spec=request.spec,
                                                                     request=request),
    )
    _start_report(config)
    _start_step_summary(config)
    log = config.stash[NOISE_KEY] = _NoiseLog()
    config.pluginmanager.register(log, f"interp-noise-{id(config)}")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in config.stash.get(KINDS_KEY, []):
        KINDS.unregister(name)
    state = config.stash.get(REPORT_KEY, None)
    if state is not None and state in _ACTIVE:
        _ACTIVE.remove(state)


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
        for spec in (*interp.specs, *([interp.baseline] if interp.baseline else [])):
            if not _provided(session.config, spec):
                validate(resolve_spec(spec, remote=interp.remote), weights=not interp.remote)
    except InterpError as exc:
        raise pytest.UsageError(f"pytest-interp: {exc}") from None


def _provided(config: pytest.Config, spec: str) -> bool:
    """Whether a conftest or plugin may supply ``spec`` (pytest_interp_load_model): then
    its checks wait for the test that needs the model."""
    from .backends.loading import resolve_spec

    if not config.hook.pytest_interp_load_model.get_hookimpls():
        return False
    try:
        resolve_spec(spec)
    except InterpError:
        return True
    return False


def _commit(spec: str | None) -> str:
    """`` (commit abc123...)`` for a hub id the Hugging Face cache resolves, else ''."""
    if spec is None or "/" not in spec or Path(spec).exists():
        return ""
    from .backends.loading import hub_commit, resolve_spec

    try:
        resolved = resolve_spec(spec)
        commit = hub_commit(resolved) if resolved.kind == "hub" else None
    except InterpError:
        return ""
    return f" (commit {commit[:12]})" if commit else ""


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
    ids = model_ids(interp.specs)
    models = (f"models {', '.join(i + _commit(s) for i, s in zip(ids, interp.specs, strict=True))}"
              " (each test that uses a model runs on each)") if len(interp.specs) > 1 else \
        f"model {interp.spec or '(none: set --interp-model)'}{_commit(interp.spec)}"
    if interp.baseline:
        models += f", baseline {interp.baseline}{_commit(interp.baseline)}"
    return [
        f"interp: {models}, backend {interp.backend}, "
        f"device {device}, dtype {interp.dtype}, prepend_bos {bos}, "
        f"memo {interp.memory_bytes / 1024**3:.2f} GiB, threads "
        f"{interp.threads or 'torch default'}, seed {interp.seed}, deterministic "
        f"{str(interp.deterministic).lower()}",
        f"interp libraries: {_versions()}",
    ]


# ---------------------------------------------------------------------------
# Collection: markers -> expectations (static: no model, no tokenizer, no forward pass)


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
    """Bind each interp marker to its dataclass (types, ranges, files); a bad one, or a
    near-miss of one of our marker names, is a collection error naming the test."""
    ours = (INTERP_MODEL.name, *KINDS.names())
    registered = _registered_markers(item.config)
    for mark in item.iter_markers():
        if mark.name not in registered:
            close = difflib.get_close_matches(mark.name, ours, n=1, cutoff=0.75)
            if close:
                raise pytest.Collector.CollectError(
                    f"{item.nodeid}: @pytest.mark.{mark.name} is not a marker: did you mean "
                    f"@pytest.mark.{close[0]}?"
                )
    try:
        found = item.get_closest_marker(INTERP_MODEL.name)
        override = INTERP_MODEL.build(found.args, dict(found.kwargs)) if found else None
        if override is not None and not _provided(item.config, override.spec):
            from .backends.loading import resolve_spec, validate

            validate(resolve_spec(override.spec))
    except InterpError as exc:
        raise pytest.Collector.CollectError(
            f"{item.nodeid}: @pytest.mark.interp_model: {exc}"
        ) from None
    item.stash[OVERRIDE_KEY] = override
    expectations = []
    for mark in _in_source_order(item):
        if mark.name not in KINDS:
            continue
        kind = KINDS[mark.name]
        try:
            expectation = kind.parse(mark.args, dict(mark.kwargs), item.config.rootpath)
        except InterpError as exc:
            raise pytest.Collector.CollectError(
                f"{item.nodeid}: @pytest.mark.{kind.name}: {exc}"
            ) from None
        if isinstance(expectation, DatasetExpectation) and item.config.option.verbose >= 2:
            expectation = replace(expectation, shown=None)
        expectations.append((kind, expectation))
    item.stash[EXPECT_KEY] = tuple(expectations)


def _in_source_order(item: pytest.Item) -> list[pytest.Mark]:
    """The item's marks as a reader sees them: the function's top to bottom (decorators
    apply bottom-up), then its class's, then its module's."""
    by_node: dict[int, list[pytest.Mark]] = {}
    for node, mark in item.iter_markers_with_node():
        by_node.setdefault(id(node), []).append(mark)
    return [mark for marks in by_node.values() for mark in reversed(marks)]


def _registered_markers(config: pytest.Config) -> set[str]:
    """The names of every marker registered with pytest (ini ``markers`` and plugins)."""
    return {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}


def _model_for(item: pytest.Item) -> InterpModel:
    return item.config.stash[POOL_KEY].get(_request_for(item))


def _request_for(item: pytest.Item) -> ModelRequest:
    return item.config.stash[CONFIG_KEY].request(item.stash.get(OVERRIDE_KEY, None),
                                                 _series_spec(item))


SERIES = "interp_series_model"  # the parameter naming a test's model when several are given
_USES_MODEL = ("interp_model", "interp_cache")


def _series_spec(item: pytest.Item | None) -> str | None:
    """The model this test was parametrized with (several ``--interp-model``), if any."""
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(SERIES) if callspec is not None else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """With several models, run each test that uses one (a fixture or a marker) on each,
    unless ``@pytest.mark.interp_model`` pins its model. The parameter is session-scoped, so
    pytest orders tests by model and each model is loaded once."""
    interp = metafunc.config.stash[CONFIG_KEY]
    if len(interp.specs) < 2 or metafunc.definition.get_closest_marker(INTERP_MODEL.name):
        return
    names = set(KINDS.names())
    if not (any(name in metafunc.fixturenames for name in _USES_MODEL)
            or any(mark.name in names for mark in metafunc.definition.iter_markers())):
        return
    if SERIES not in metafunc.fixturenames:
        metafunc.fixturenames.append(SERIES)
    metafunc.parametrize(SERIES, interp.specs, ids=model_ids(interp.specs), scope="session")


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Release a series model when the next test runs on another one (tests are ordered by
    model, so it is not needed again in this process)."""
    spec, following = _series_spec(item), _series_spec(nextitem)
    if spec is not None and following is not None and following != spec \
            and spec != item.config.stash[CONFIG_KEY].baseline:
        item.config.stash[POOL_KEY].release(spec)


# ---------------------------------------------------------------------------
# Fixtures


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
    (ini ``interp_snapshot_{prob,logit,recovery}_tol``) and diffed in model terms. A test has
    one snapshot whichever model of a series runs it; ``interp_snapshot(max_drift=N)`` lets
    one assertion drift N noise floors and pass, its diff shown."""
    from .snapshot import InterpSnapshotAssertion, InterpSnapshotExtension, with_tolerance

    config, item = request.config, request.node
    interp = config.stash[CONFIG_KEY]
    spec = _series_spec(item)
    updating = bool(getattr(config.option, "update_snapshots", False))
    writes = updating and (spec is None or interp.writer is None or spec == interp.writer)
    extension = with_tolerance(InterpSnapshotExtension, **interp.tolerances)
    extension.details = bool(getattr(config.option, "include_snapshot_details", False))
    extension.max_drift, extension.report_drift = interp.max_drift, interp.drift == "report"
    extension.updating, extension.series_id = writes, _series_id(item)
    if writes and interp.noise_floor:
        extension.calibrator = _calibrator(config)
        extension.recalibrate = interp.calibrate
    if interp.baseline is not None and not writes:
        extension.baseline = _baseline_reference(item)
    try:
        extension.dtype = _request_for(item).dtype
    except InterpError:
        pass  # no model configured: float32 tolerances
    assertion = InterpSnapshotAssertion(
        session=snapshot.session, extension_class=extension, test_location=snapshot.test_location,
        update_snapshots=snapshot.update_snapshots,
        update_new_snapshots_only=snapshot.update_new_snapshots_only)
    assertion.passive = updating and not writes  # another model of the series writes
    return assertion


SNAPSHOTTED_KEY = pytest.StashKey[list[Any]]()  # results a snapshot compared with the baseline


def _baseline_reference(item: pytest.Item) -> Callable[[Any, Any], tuple[str, str] | None]:
    """For ``--interp-baseline``: a snapshot's result -> the same probe's result on the
    baseline as stored text (with the stored snapshot's floors, else the baseline's measured
    ones), and " from baseline SPEC"; None when there is nothing to compare."""
    from .record import ORIGINS, recording, remember_origin
    from .snapshot import reference_text

    config = item.config
    interp = config.stash[CONFIG_KEY]

    def reference(result: Any, floors: Any) -> tuple[str, str] | None:
        origin = ORIGINS.get(result)
        own = origin[0].request if origin is not None else None
        if origin is None or own is None or interp.baseline is None:
            return None
        request = replace(own, spec=interp.baseline)
        if request == own:
            return None  # against itself: the same results, by construction
        baseline = config.stash[POOL_KEY].get(request)
        with recording():  # the baseline's results are not this test's figures
            old = origin[1](baseline)
            remember_origin(old, baseline, origin[1])  # the floor re-runs it on variants
            if floors is None and interp.noise_floor:
                floors = _calibrator(config).floors(old)
        item.stash.setdefault(SNAPSHOTTED_KEY, []).append(result)
        return reference_text(old, request.dtype, floors), f" from baseline {interp.baseline}"

    return reference


def _series_id(item: pytest.Item) -> str | None:
    """The id of this test's model in a series (``step_00200``), if any."""
    spec = _series_spec(item)
    if spec is None:
        return None
    specs = item.config.stash[CONFIG_KEY].specs
    return model_ids(specs)[specs.index(spec)]


CALIBRATOR_KEY = pytest.StashKey[Any]()  # snapshot.Calibrator, one per session


def _calibrator(config: pytest.Config) -> Any:
    """The session's noise-floor calibrator (its perturbed models load once per session)."""
    if CALIBRATOR_KEY not in config.stash:
        from .snapshot import Calibrator, Tolerances

        interp = config.stash[CONFIG_KEY]
        config.stash[CALIBRATOR_KEY] = Calibrator(
            config.stash[POOL_KEY], interp.noise_floor, interp.noise_k,
            Tolerances(**interp.tolerances))
    return config.stash[CALIBRATOR_KEY]


# ---------------------------------------------------------------------------
# Running: expectations after the test body, per-test seeds, timeouts, report figures


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """After the test body passes, check each expectation its markers declared; each fails
    on its own (with the marker named), and the others still run."""
    result = yield
    expectations = pyfuncitem.stash.get(EXPECT_KEY, ())
    if not expectations:
        return result
    try:
        model = _model_for(pyfuncitem)
    except InterpError as exc:
        message = f"pytest-interp: {exc}"
    else:
        failures = [text for kind, expectation in expectations
                    if (text := _check(kind, expectation, model, pyfuncitem)) is not None]
        if not failures:
            if pyfuncitem.config.stash[CONFIG_KEY].controls:
                _control(pyfuncitem, expectations)
            return result
        message = "\n\n".join(failures)
        if all(isinstance(text, Inconclusive) for text in failures):
            raise InconclusiveVerdict(message, pytrace=False)
    pytest.fail(message, pytrace=False)


class VacuousWarning(UserWarning):
    """A test's expectations also hold on a randomly re-initialised model."""


VACUOUS = "interp_vacuous"  # the user property carrying a vacuous test's note


def _control(item: pytest.Function,
             expectations: tuple[tuple[ExpectationKind[Any, Any], Expectation[Any]], ...]) -> None:
    """Check each expectation on the control model: each that passes there too is VACUOUS
    (one note naming them, with their labels)."""
    import dataclasses
    import warnings

    request = dataclasses.replace(_request_for(item), perturbation="reinit")
    try:
        control = item.config.stash[POOL_KEY].get(request)
    except InterpError:
        return
    from .record import recording

    with recording():  # the control's results are not this test's figures
        vacuous = [f"@pytest.mark.{kind.name}" + (f"({label})" if (label := e.label()) else "")
                   for kind, e in expectations if _check(kind, e, control) is None]
    if not vacuous:
        return
    one = len(vacuous) == 1
    of = "" if len(vacuous) == len(expectations) else f" ({len(vacuous)} of {len(expectations)} " \
        "markers)"
    note = (f"VACUOUS: {', '.join(vacuous)} also passed on a randomly re-initialised "
            f"{request.spec}{of} (--interp-controls): {'it does' if one else 'they do'} not "
            f"depend on what the model learned; tighten {'its' if one else 'their'} bounds")
    item.user_properties.append((VACUOUS, note))
    warnings.warn(VacuousWarning(note), stacklevel=1)


class InconclusiveVerdict(pytest.fail.Exception):  # type: ignore[name-defined]
    """Every failed expectation of a test was INCONCLUSIVE (none failed outright)."""


INCONCLUSIVE = ("interp_verdict", "inconclusive")  # the user property marking such a report


MEASURED = "interp_measured"  # the user property carrying what an expectation measured
MARKED_KEY = pytest.StashKey[list[Any]]()  # the results a test's markers checked
POINTS_KEY = pytest.StashKey[list[str]]()  # each expectation's kind, verdict, value (JSON)
POINT, SERIES_ID = "interp_point", "interp_series"  # report properties, for the HTML report


def _check(kind: ExpectationKind[Any, Any], expectation: Expectation[Any],
           model: InterpModel, item: pytest.Item | None = None) -> str | None:
    """One expectation's failure text (a model-dependent bad argument names the marker);
    with ``item``, what it measured goes to the item's properties (JUnit XML)."""
    try:
        result, text = kind.check(model, expectation)
    except InterpError as exc:
        return f"@pytest.mark.{kind.name}: {exc}"
    if item is not None:  # a marker's bound is its claim: --interp-baseline skips it
        item.stash.setdefault(MARKED_KEY, []).append(result)
    if item is None:
        return text
    verdict = "passed" if text is None else \
        "inconclusive" if isinstance(text, Inconclusive) else "failed"
    label = expectation.label()
    named = f"{kind.name}({label})" if label else kind.name
    line = expectation.measured(result)
    if line is not None:
        item.user_properties.append((MEASURED, f"{named}: {line} ({verdict})"))
    import json

    point = expectation.point(result) or {}
    points = item.stash.setdefault(POINTS_KEY, [])
    points.append(json.dumps({"kind": kind.name, "label": label, "index": len(points),
                              "verdict": verdict, **point}))
    return text


def _report_path(config: pytest.Config) -> Path | None:
    """The HTML report's path: ``--interp-report`` (relative to the working directory; empty:
    no report, whatever the ini says), else the ini's (relative to the rootdir), else None."""
    option = config.getoption("interp_report")
    raw = config.getini("interp_report") if option is None else option
    if not raw:
        return None
    path = Path(raw)
    return path if path.is_absolute() else (
        Path.cwd() / path if option is not None else config.rootpath / path)


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
                result = yield
                changed = _against_baseline(item, items)
        except _Timeout:
            pytest.fail(f"pytest-interp: the test ran past --interp-timeout={timeout:g}s and was "
                        "stopped: restrict the sweep (layers=, positions=) or raise the limit",
                        pytrace=False)
        finally:
            item.stash[RECORDED_KEY] = list(items)
    if changed:
        pytest.fail(changed, pytrace=False)
    return result


def _against_baseline(item: pytest.Item, recorded: list[Any]) -> str | None:
    """With ``--interp-baseline``: each result the test body computed on its model (a
    marker's result is judged by its bound), compared with the same probe on the baseline
    as a snapshot written there would be (a result a snapshot assertion compared with the
    baseline is not compared twice). Records the diffs, near-ties and drifts; returns the
    failure text of those over the drift budget (unless --interp-drift=report), or None."""
    from .record import ORIGINS, SnapshotChecked, record, recording, remember_origin
    from .snapshot import Tolerances, against_baseline, codec_for

    config = item.config
    interp = config.stash[CONFIG_KEY]
    if interp.baseline is None:
        return None
    own = _request_for(item)
    done = [*item.stash.get(MARKED_KEY, []), *item.stash.get(SNAPSHOTTED_KEY, [])]
    compared = [(result, ORIGINS[result][1]) for result in recorded
                if result in ORIGINS and codec_for(result) is not None
                and ORIGINS[result][0].request == own
                and not any(result is other for other in done)]
    if not compared:
        return None
    request = replace(own, spec=interp.baseline)
    if request == own:
        return None  # against itself: the same results, by construction
    try:
        baseline = config.stash[POOL_KEY].get(request)
    except InterpError as exc:
        return f"pytest-interp: --interp-baseline: {exc}"
    found = []
    details = bool(getattr(config.option, "include_snapshot_details", False))
    for result, recipe in compared:
        with recording():  # the baseline's results are not this test's figures
            old = recipe(baseline)
            remember_origin(old, baseline, recipe)  # the floor re-runs it on variants
            floors = _calibrator(config).floors(old) if interp.noise_floor else None
        diff = against_baseline(result, old, interp.baseline, Tolerances(**interp.tolerances),
                                floors, (request.dtype, own.dtype), details=details,
                                max_drift=interp.max_drift)
        if diff is not None:
            record(diff)
        drift = diff.drift if isinstance(diff, SnapshotDiff) else 0.0
        record(SnapshotChecked(f"{type(result).__name__} from baseline", drift))
        found.append(diff)
    texts = ["\n".join(diff.lines) for diff in found if isinstance(diff, SnapshotDiff)
             and not diff.within and (diff.measurement or interp.drift == "fail")]
    return "\n\n".join(texts) or None


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


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the figures (HTML) to the call report; they travel with it under xdist."""
    report = yield
    if call.when != "call":
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, InconclusiveVerdict):
        _inconclusive(report, str(call.excinfo.value.msg),
                      item.config.stash[CONFIG_KEY].inconclusive)
        item.user_properties.append(INCONCLUSIVE)  # JUnit XML writes the item's properties
    series_id = _series_id(item)
    if series_id is not None:  # which model of the series, for the report and the CI summary
        report.user_properties.append((SERIES_ID, series_id))
    recorded = item.stash.get(RECORDED_KEY, [])
    if RECORDED_KEY in item.stash:
        del item.stash[RECORDED_KEY]  # results may hold tensors and their model: let them go
    _drifts(item, report, recorded)
    longrepr: Any = report.longrepr
    if report.failed and hasattr(longrepr, "addsection"):
        for diff in recorded:  # pytest truncates assertion text; these are shown whole
            if isinstance(diff, SnapshotDiff) and not diff.within and diff.lines \
                    and "\n".join(diff.lines) not in report.longreprtext:
                longrepr.addsection(f"interp: {diff.name} changed", "\n".join(diff.lines))
    for diff in recorded:  # the largest changes, for CI summaries (controller side)
        if isinstance(diff, SnapshotDiff):
            report.user_properties += [(CHANGED, f"{diff.name}: {change}")
                                       for change in diff.changes[:3]]
    for noise in recorded:
        if isinstance(noise, SnapshotNoise):
            report.user_properties.append(("interp_noise", f"{item.nodeid} {noise.name}: "
                                                           + "; ".join(noise.changes)))
    if _report_path(item.config) is not None:
        from .report.figures import figure

        report.user_properties += [(POINT, p) for p in item.stash.get(POINTS_KEY, [])]
        html = "".join(figure(x) for x in recorded)
        if html:
            report.user_properties.append(("interp_figures", html))
    return report


DRIFT = ("interp_verdict", "drift")  # the user property marking a DRIFT report
DRIFTED, WITHIN = "interp_drift", "interp_within"  # report properties: drift, diffs in budget


def _drifts(item: pytest.Item, report: pytest.TestReport, recorded: list[Any]) -> None:
    """The snapshots' drift: the largest (for the report's grid and trend), the diffs within
    budget (shown, not failed), and, with --interp-drift=report, a passing test with one
    over its budget marked DRIFT."""
    import json

    from .record import SnapshotChecked

    interp = item.config.stash[CONFIG_KEY]
    checked = [c.drift for c in recorded if isinstance(c, SnapshotChecked)]
    diffs = [d for d in recorded if isinstance(d, SnapshotDiff)]
    if not checked:
        return
    drift = max(checked)
    budget = max((d.budget for d in diffs), default=interp.max_drift)
    report.user_properties.append((DRIFTED, f"{drift:.4g}"))
    over = [d for d in diffs if not d.within and not d.measurement]
    verdict = "failed" if report.failed else "drift" if over else "passed"
    item.stash.setdefault(POINTS_KEY, []).append(json.dumps(
        {"kind": "snapshot", "label": "", "verdict": verdict, "name": "drift (noise floors)",
         "value": min(drift, 1e6), "low": None, "high": budget}))
    report.user_properties += [(WITHIN, f"{item.nodeid}: {d.name}, drift {d.drift:.3g} noise "
                                        f"floors (budget {d.budget:g})")
                               for d in diffs if d.within]
    if report.passed and over and interp.drift == "report":
        report.user_properties.append(DRIFT)
        item.user_properties += [DRIFT, (DRIFTED, f"{drift:.4g}")]  # JUnit XML
        report.sections.append(("interp: drift (reported by --interp-drift=report)",
                                "\n\n".join("\n".join(d.lines) for d in over)))


def _inconclusive(report: pytest.TestReport, message: str, policy: Inconclusives) -> None:
    """Mark an INCONCLUSIVE report and give it the outcome ``--interp-inconclusive`` says."""
    report.user_properties.append(INCONCLUSIVE)
    report.sections.append((f"interp: inconclusive ({policy}ed by --interp-inconclusive)"
                            if policy != "fail" else "interp: inconclusive", message))
    if policy == "pass":
        report.outcome = "passed"
        report.longrepr = None
    elif policy == "skip":
        path, lineno, _ = report.location
        report.outcome = "skipped"
        report.longrepr = (str(path), (lineno or 0) + 1, f"Skipped: {message.splitlines()[0]}")


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, tuple[str, dict[str, bool]]] | None:
    """INCONCLUSIVE and DRIFT are statuses of their own: word, letter and summary count."""
    if report.when == "call" and INCONCLUSIVE in report.user_properties:
        return "inconclusive", "I", ("INCONCLUSIVE", {"yellow": True})
    if report.when == "call" and DRIFT in report.user_properties:
        return "drift", "D", ("DRIFT", {"yellow": True})
    return None


# ---------------------------------------------------------------------------
# The HTML report


@dataclass
class _Report:
    path: Path
    start: float
    entries: dict[str, Entry]


_ACTIVE: list[_Report] = []  # a stack: pytester runs sessions inside sessions


def _start_report(config: pytest.Config) -> None:
    """Collect report entries when a report is asked for (on the controller, not workers,
    and not when only collecting)."""
    path = _report_path(config)
    if path is not None and not hasattr(config, "workerinput") and not config.option.collectonly:
        import time

        state = _Report(path, time.perf_counter(), {})
        config.stash[REPORT_KEY] = state
        _ACTIVE.append(state)


class _NoiseLog:
    """Collects, on the controller, the near-ties each test's snapshots called noise."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.within: list[str] = []  # snapshot diffs within their drift budget

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.lines += [str(v) for k, v in report.user_properties if k == "interp_noise"]
            self.within += [str(v) for k, v in report.user_properties if k == WITHIN]


NOISE_KEY = pytest.StashKey[_NoiseLog]()
CHANGED = "interp_changed"  # a report property: one of a failed snapshot's largest changes


class _StepSummary:
    """Collects, on the controller, each test's outcome, measured values and snapshot
    changes; at the end appends a Markdown summary to ``GITHUB_STEP_SUMMARY``."""

    def __init__(self, path: str) -> None:
        from .report.summary import SummaryRow

        self.path = path
        self.rows: dict[str, SummaryRow] = {}
        self.row = SummaryRow

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call" and not report.failed and not report.skipped:
            return
        row = self.rows.setdefault(report.nodeid, self.row(report.nodeid))
        if report.failed or report.skipped or report.when == "call":
            row.outcome = _outcome(report)
        if report.when == "call":
            row.measured += [str(v) for k, v in report.user_properties if k == MEASURED]
            row.changes += [str(v) for k, v in report.user_properties if k == CHANGED]
            row.model = next((str(v) for k, v in report.user_properties if k == SERIES_ID),
                             None)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        from .report.summary import markdown

        interp = session.config.stash[CONFIG_KEY]
        ids = model_ids(interp.specs)
        title = f"{', '.join(ids) or 'no model'} via {interp.backend}"
        if interp.baseline:
            title += f", against baseline {interp.baseline}"
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(markdown(list(self.rows.values()), title,
                               models=ids if len(ids) > 1 else None))


def _start_step_summary(config: pytest.Config) -> None:
    """With ``GITHUB_STEP_SUMMARY`` set (GitHub Actions), on the controller, collect the
    Markdown summary (not when only collecting)."""
    import os

    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path and not hasattr(config, "workerinput") and not config.option.collectonly:
        config.pluginmanager.register(_StepSummary(path), f"interp-summary-{id(config)}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _ACTIVE or (report.when != "call" and not report.failed and not report.skipped):
        return
    entry = _ACTIVE[-1].entries.setdefault(report.nodeid, Entry(report.nodeid))
    entry.outcome = _outcome(report)
    entry.duration += report.duration
    if entry.outcome in ("inconclusive", "drift"):
        entry.failure += "".join(text for name, text in report.sections
                                 if name.startswith(f"interp: {entry.outcome}"))
    elif report.failed or report.skipped:
        entry.failure += report.longreprtext
    entry.figures += [str(v) for k, v in report.user_properties if k == "interp_figures"]
    if report.when == "call":
        import json

        entry.notes += [str(v) for k, v in report.user_properties if k in (VACUOUS, WITHIN)]
        entry.measured += [str(v) for k, v in report.user_properties if k == MEASURED]
        entry.points += [json.loads(str(v)) for k, v in report.user_properties if k == POINT]
        entry.model = next((str(v) for k, v in report.user_properties if k == SERIES_ID), None)
        drift = next((float(str(v)) for k, v in report.user_properties if k == DRIFTED), None)
        entry.drift = entry.drift if drift is None else drift


def _outcome(report: pytest.TestReport) -> str:
    """passed, failed, skipped, or our own: inconclusive, drift."""
    if INCONCLUSIVE in report.user_properties:
        return "inconclusive"
    if DRIFT in report.user_properties:
        return "drift"
    return "failed" if report.failed else report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(REPORT_KEY, None)
    if state is None:
        return
    import time

    from .report.html import write_report

    specs = session.config.stash[CONFIG_KEY].specs
    write_report(state.path, list(state.entries.values()),
                 pytest_report_header(session.config), time.perf_counter() - state.start,
                 models=model_ids(specs) if len(specs) > 1 else [])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    _summarize_section(terminalreporter, "inconclusive")
    _summarize_section(terminalreporter, "drift")
    vacuous = [r.nodeid for r in terminalreporter.stats.get("passed", ())
               if getattr(r, "when", None) == "call"
               and any(k == VACUOUS for k, _ in r.user_properties)]
    if vacuous:
        terminalreporter.write_line(
            f"interp: {len(vacuous)} vacuous test{'s' if len(vacuous) != 1 else ''} (also "
            "pass on a re-initialised model):", yellow=True)
        for nodeid in vacuous:
            terminalreporter.write_line(f"  VACUOUS {nodeid}")
    log = config.stash.get(NOISE_KEY, None)
    noise = log.lines if log is not None else []
    if noise:
        details = bool(getattr(config.option, "include_snapshot_details", False))
        terminalreporter.write_line(
            f"interp: {len(noise)} snapshot{'s' if len(noise) != 1 else ''} passed with "
            "near-ties (noise, not failures)"
            + (":" if details else "; --snapshot-details lists them"))
        for line in noise if details else ():
            terminalreporter.write_line(f"  ~ {line}")
    within = log.within if log is not None else []
    if within:
        terminalreporter.write_line(
            f"interp: {len(within)} snapshot{'s' if len(within) != 1 else ''} moved beyond "
            "the noise floor, within the drift budget (passed; the report shows the diffs):")
        for line in within:
            terminalreporter.write_line(f"  ~ {line}")
    state = config.stash.get(REPORT_KEY, None)
    if state is not None:
        terminalreporter.write_line(f"interp: report written to {state.path}")
    pool = config.stash.get(POOL_KEY, None)
    if pool is None or not pool.seen():
        return
    for model in pool.seen():
        info, stats = model.info, model.memo.stats
        variant = model.request.perturbation if model.request is not None else None
        terminalreporter.write_line(
            f"interp: {info.name} rev {info.revision} ({info.architecture}, {info.n_layers} "
            f"layers) via {info.backend}"
            + (", re-initialised control (--interp-controls)" if variant == "reinit" else
               f", {variant} variant for noise floors" if variant else "")
            + f": {stats.passes} forward pass{'es' if stats.passes != 1 else ''}, "
            + f"{stats.reused} result{'s' if stats.reused != 1 else ''} reused, "
            + ("released after its tests" if model.closed
               else f"{model.memo.nbytes / 1024**2:.1f} MiB held")
        )



def _summarize_section(terminalreporter: Any, status: str) -> None:
    """An INCONCLUSIVE or DRIFT section, like FAILURES: pytest lists only its own
    categories."""
    reports = [r for r in terminalreporter.stats.get(status, ())
               if getattr(r, "when", None) == "call"]
    if not reports:
        return
    terminalreporter.write_sep("=", status.upper(), yellow=True)
    for report in reports:
        terminalreporter.write_sep("_", report.head_line or report.nodeid, yellow=True)
        for name, body in report.sections:
            if name.startswith(f"interp: {status}"):
                terminalreporter.write_line(body)
