"""plugin layer: the session's start: the configured models (and NDIF key) checked at once, in one
line, before any test runs; and the header naming models, backend and libraries."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest

from ..errors import InterpError
from .items import provided
from .options import CONFIG_KEY
from .specs import model_ids

NO_NDIF_KEY = (
    "--interp-remote needs an NDIF API key and none is configured: set NDIF_API_KEY (get a key "
    "at https://login.ndif.us) or save one once with python -c \"import nnsight; "
    "nnsight.CONFIG.set_default_api_key('KEY')\""
)


class SessionStart:
    """Validates the session's models and writes the header."""

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Fail at once, in one line, if a model spec (or the NDIF key) cannot be used."""
        interp = session.config.stash[CONFIG_KEY]
        if interp.spec is None and not interp.remote:
            return  # a project not using pytest-interp: import nothing
        from ..backends.specs import resolve_spec
        from ..backends.validate import validate

        try:
            if interp.remote:
                from ..backends.nnsight import ndif_api_key

                if not ndif_api_key():
                    raise InterpError(NO_NDIF_KEY)
            for spec in (*interp.specs, *([interp.baseline] if interp.baseline else [])):
                if not provided(session.config, spec):
                    validate(resolve_spec(spec, remote=interp.remote),
                             weights=not interp.remote)
        except InterpError as exc:
            raise pytest.UsageError(f"pytest-interp: {exc}") from None

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        return header(config)


def header(config: pytest.Config) -> list[str]:
    """The session's settings and libraries, as the terminal and the report show them."""
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


def _commit(spec: str | None) -> str:
    """`` (commit abc123...)`` for a hub id the Hugging Face cache resolves, else ''."""
    if spec is None or "/" not in spec or Path(spec).exists():
        return ""
    from ..backends.hub import hub_commit
    from ..backends.specs import resolve_spec

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
