"""plugin layer: every option in one declarative table (command line flag, ini key, type, default,
help), added to pytest and read into one frozen ``InterpConfig`` kept in ``config.stash``. An option
is added in one place: ``OPTIONS``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from ..errors import InterpError
from ..settings import (
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
from .specs import model_ids, ordered


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


def _budget(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    return check_budget(value, "--interp-max-drift")


def _deterministic(text: str) -> bool:
    return parse_bool(text, "") is not False


@dataclass(frozen=True)
class Option:
    """One setting: ``--interp-<name>`` on the command line and ``interp_<name>`` in the ini
    file (the command line wins). ``metavar`` None: a flag (``store_true``). ``parse`` reads
    the command line's text (an InterpError is its one-line error); the ini file's value
    is typed by ``ini`` and parsed the same way when it is text."""

    name: str
    help: str
    default: Any = None
    ini: Any = "string"  # pytest's ini type, or None: command line only
    metavar: str | None = "VALUE"
    parse: Callable[[str], Any] | None = None
    choices: tuple[str, ...] | None = None
    ini_parse: Callable[[str], Any] | None = None  # the ini file's text (default: parse)

    @property
    def flag(self) -> str:
        return "--interp-" + self.name.replace("_", "-")


DEFAULT_NOISE_FLOOR = "backend, bfloat16, noise:1e-3"

OPTIONS = (
    Option("baseline", "compare every result a test computes with the same probe on this "
           "model, as a snapshot written on it would be (same codecs and noise floor)", "",
           metavar="SPEC"),
    Option("backend", f"backend: {' | '.join(BACKENDS)}", "transformer_lens", BackendName,
           "NAME", choices=BACKENDS),
    Option("device", f"device: {' | '.join(DEVICES)}", "cpu", DeviceName, "NAME",
           choices=DEVICES),
    Option("dtype", f"dtype: {' | '.join(DTYPES)}", "float32", DtypeName, "NAME",
           choices=DTYPES),
    Option("prepend_bos", "prepend BOS: true | false | auto (the tokenizer's default)", "auto",
           bool | Literal["auto"], "BOOL", _bool_or_auto),
    Option("memory", "memory budget of the memoised runs and results per model, e.g. 2GiB", "2GiB",
           "string", "SIZE", lambda text: parse_bytes(text, ""), ini_parse=parse_bytes),
    Option("timeout", "seconds a test's model work may take before it fails (0 = no limit)",
           0.0, float, "SECONDS", _seconds_value),
    Option("threads", "torch CPU threads per process: N, or auto (under xdist: cores // "
                      "workers, so workers do not oversubscribe the cores; otherwise torch's "
                      "default)", "auto", int | Literal["auto"], "N", _threads_value),
    Option("seed", "base seed: each test starts with random, numpy and torch seeded from it "
                   "and its node id, so its draws do not depend on test order or xdist worker",
           0, int, "N", int),
    Option("deterministic", "torch.use_deterministic_algorithms on model load (true | false)",
           True, bool, "BOOL", _deterministic),
    Option("remote", "run the model on NDIF through nnsight (remote=True): only its config "
                     "and tokenizer load here; needs an NDIF API key", False, bool, None),
    Option("report", "write a self-contained HTML report with figures to PATH (relative to "
                     "the rootdir in the ini file; an empty --interp-report= writes none)", "",
           "string", "PATH"),
    Option("results", "write each test's outcome, measured values, figures and snapshot "
                      "changes to PATH as JSON lines, as they finish (relative to the rootdir "
                      "in the ini file): `pytest-interp merge` makes the report from such "
                      "files", "", "string", "PATH"),
    Option("shard", "run shard I of N: whole models of a series (else whole test files), "
                    "assigned deterministically and balanced by their tests", None, "string", "I/N",
           lambda text: parse_shard(text)),
    Option("shard_durations", "with --interp-shard: a previous results file whose test "
                              "durations balance the shards", "", "string", "PATH"),
    Option("noise_floor", "what a snapshot's noise floor is measured under when it is "
                          "written: a comma list of backend, bfloat16, noise:R, or none",
           DEFAULT_NOISE_FLOOR, "string", "LIST", _perturbations),
    Option("noise_k", "a noise floor is k x the largest deviation the perturbations cause",
           3.0, float, "K", _positive),
    Option("max_drift", "how far a snapshot (or a result against --interp-baseline) may move, "
                        "in noise floors, and still pass with its diff shown (1: nothing "
                        "beyond the noise floor); interp_snapshot(max_drift=N) sets one "
                        "snapshot's", 1.0, float, "N", _budget),
    Option("drift", "the outcome of a snapshot over its drift budget: fail, or report (its "
                    "own outcome DRIFT, which does not fail the run)", "fail", Drifts,
           "OUTCOME", choices=DRIFTS),
    Option("snapshot_model", "with --snapshot-update in a series: the model (spec or id) "
                             "whose results write each test's one snapshot", "",
           metavar="SPEC"),
    Option("inconclusive", "the outcome of a test whose dataset verdict is INCONCLUSIVE (its "
                           "interval straddles the bound): fail | pass | skip", "fail",
           Inconclusives, "OUTCOME", choices=INCONCLUSIVES),
    Option("controls", "check every marker of a passing test again on a randomly "
                       "re-initialised copy of the model (same config, seeded): one that "
                       "passes there too is VACUOUS, it does not depend on what the model "
                       "learned", False, bool, None),
    Option("calibrate", "with --snapshot-update: re-measure the noise floor of every snapshot "
                        "asserted, and rewrite those whose floor changed", False, None, None),
)

TOLERANCES = (("prob", 0.02), ("logit", 0.1), ("recovery", 0.05))


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type from a parser raising InterpError."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except InterpError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_options(parser: pytest.Parser) -> None:
    """Every option of ``OPTIONS`` (and the repeatable ``--interp-model``) to pytest."""
    group = parser.getgroup("interp", "pytest-interp: tests of model internals")
    group.addoption("--interp-model", dest="interp_model", metavar="SPEC", action="append",
                    default=None,
                    help="model spec: alias (smollm2-135m, tiny-random-llama), local HF "
                         "directory, .gguf file or hub id org/name[@revision]; repeat it to "
                         "run every test that uses a model on each (ini: interp_model, "
                         "whitespace-separated)")
    parser.addini("interp_model", "model specs (whitespace-separated; quote a path with spaces)",
                  type="args", default=[])
    for option in OPTIONS:
        ini = f"interp_{option.name}"
        if option.metavar is None:  # a flag
            where = f" (ini: {ini})" if option.ini is not None else ""
            group.addoption(option.flag, dest=ini, action="store_true",
                            default=None if option.ini is not None else False,
                            help=option.help + where)
        else:
            shown = {True: "true", False: "false"}.get(option.default, option.default)
            default = "" if option.default is None else f"; default {shown}"
            kwargs: dict[str, Any] = {"choices": option.choices} if option.choices else {}
            if option.parse is not None:
                kwargs["type"] = _arg(option.parse)
            group.addoption(option.flag, dest=ini, metavar=option.metavar, default=None,
                            help=f"{option.help} (ini: {ini}{default})", **kwargs)
        if option.ini is not None:
            parser.addini(ini, option.help, type=option.ini, default=option.default)
    for name, tolerance in TOLERANCES:
        parser.addini(f"interp_snapshot_{name}_tol",
                      f"interp_snapshot: absolute tolerance on {name} values", type=float,
                      default=tolerance)


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
    shard: tuple[int, int] | None = None  # (i, n): run shard i of n

    def request(self, override: ModelOverride | None = None,
                spec: str | None = None) -> ModelRequest:
        """The model request for a test: the session's (``spec``: the test's model of a
        series), changed by its ``interp_model`` marker."""
        if override is None:
            return ModelRequest(spec=spec or self.spec or "", backend=self.backend,
                                device=self.device, dtype=self.dtype,
                                prepend_bos=self.prepend_bos, remote=self.remote)
        return ModelRequest(
            spec=override.spec, backend=override.backend or self.backend,
            device=override.device or self.device, dtype=override.dtype or self.dtype,
            prepend_bos=self.prepend_bos if override.prepend_bos is None
            else override.prepend_bos, remote=self.remote,
        )


CONFIG_KEY = pytest.StashKey[InterpConfig]()


def setting(config: pytest.Config, name: str) -> Any:
    """An option's value: the command line's, else the ini file's, parsed like the command
    line's when the ini file gives text."""
    value = config.getoption(f"interp_{name}")
    if value is not None:
        return value
    option = next((o for o in OPTIONS if o.name == name), None)
    value = config.getini(f"interp_{name}") if option is None or option.ini else None
    parse = None if option is None else option.ini_parse or option.parse
    return parse(value) if parse is not None and isinstance(value, str) else value


def read_config(config: pytest.Config) -> InterpConfig:
    """The session's InterpConfig; a bad value is one ``pytest-interp: ...`` usage error."""
    try:
        backend, remote = setting(config, "backend"), bool(setting(config, "remote"))
        if remote and backend != "nnsight":
            raise InterpError(REMOTE_NEEDS_NNSIGHT)
        tolerances = {}
        for name, _ in TOLERANCES:
            value = config.getini(f"interp_snapshot_{name}_tol")
            if not value >= 0:
                raise InterpError(f"interp_snapshot_{name}_tol = {value!r} is negative: set a "
                                  "non-negative number such as 0.05")
            tolerances[name] = float(value)
        specs = ordered(config.getoption("interp_model") or config.getini("interp_model"))
        bos, threads = setting(config, "prepend_bos"), setting(config, "threads")
        return InterpConfig(
            spec=specs[0] if specs else None, specs=specs, backend=backend,
            device=setting(config, "device"), dtype=setting(config, "dtype"),
            prepend_bos=None if bos == "auto" else bool(bos),
            memory_bytes=setting(config, "memory"), timeout=float(setting(config, "timeout")),
            threads=_threads(config, threads), seed=int(setting(config, "seed")),
            deterministic=bool(setting(config, "deterministic")), remote=remote,
            tolerances=tolerances, noise_floor=setting(config, "noise_floor"),
            noise_k=float(setting(config, "noise_k")), calibrate=_calibrate(config),
            inconclusive=setting(config, "inconclusive"),
            controls=bool(setting(config, "controls")),
            baseline=setting(config, "baseline") or None,
            max_drift=check_budget(setting(config, "max_drift"), "interp_max_drift"),
            drift=setting(config, "drift"), writer=_writer(config, specs),
            shard=setting(config, "shard") or None,
        )
    except InterpError as exc:
        raise pytest.UsageError(f"pytest-interp: {exc}") from None


def _writer(config: pytest.Config, specs: tuple[str, ...]) -> str | None:
    """With --snapshot-update in a series, the spec of the model that writes (named by spec
    or id); a series without one is refused: each test has one snapshot."""
    named = setting(config, "snapshot_model") or None
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


def _threads(config: pytest.Config, raw: int | str) -> int | None:
    """The torch thread count: a number, or auto (cores // xdist workers on a worker)."""
    if raw != "auto":
        return int(raw)
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    if workers <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None  # one process, or the user chose
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    return max(1, cores // workers)




def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3), or one line naming the form."""
    i, slash, n = text.partition("/")
    if not (slash and i.isdigit() and n.isdigit() and 1 <= int(i) <= int(n)):
        raise InterpError(f"--interp-shard takes I/N with 1 <= I <= N, e.g. 2/3, got {text!r}")
    return int(i), int(n)


def report_path(config: pytest.Config, name: str = "report") -> Path | None:
    """The path of the HTML report (or of another file option, ``results``):
    ``--interp-<name>`` (relative to the working directory; empty: none, whatever the ini
    says), else the ini's (relative to the rootdir), else None."""
    option = config.getoption(f"interp_{name}")
    raw = config.getini(f"interp_{name}") if option is None else option
    if not raw:
        return None
    path = Path(raw)
    return path if path.is_absolute() else (
        Path.cwd() / path if option is not None else config.rootpath / path)
