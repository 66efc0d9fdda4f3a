"""backends layer: hub ids through Hugging Face's own cache and settings (``HF_HOME``,
``HF_HUB_OFFLINE``, ``HF_TOKEN``; pytest-interp never changes them): a revision's commit, its
config.json before any weights, and the one-line error naming what to download."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from ..errors import ModelSpecError
from .memory import safetensors_elements


class HubRef(Protocol):
    """A hub id and revision (a resolved spec of kind "hub")."""

    @property
    def repo(self) -> str | None: ...

    @property
    def revision(self) -> str | None: ...



def hub_offline() -> bool:
    """Whether Hugging Face is set offline (HF_HUB_OFFLINE), as huggingface_hub reads it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_missing(resolved: HubRef, why: str) -> ModelSpecError:
    """One line naming the id, the revision and the command that fetches it."""
    revision = f" --revision {resolved.revision}" if resolved.revision else ""
    at = resolved.revision or "main"
    return ModelSpecError(f"model {resolved.repo!r} at revision {at!r} {why}: fetch it once with "
                          f"`hf download {resolved.repo}{revision}` (or check the id, the "
                          "revision and HF_TOKEN)")


def _hub_config_path(resolved: HubRef) -> Path | None:
    """config.json of a hub id in the Hugging Face cache (None: not cached)."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(str(resolved.repo), "config.json", revision=resolved.revision)
    return Path(found) if isinstance(found, str) else None


def hub_config(resolved: HubRef) -> dict[str, Any]:
    """A hub id's config.json: from the cache, or (online) fetched alone, before weights."""
    path = _hub_config_path(resolved)
    if path is None:
        if hub_offline():
            raise hub_missing(resolved, "is not in the Hugging Face cache and HF_HUB_OFFLINE is "
                                        "set")
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(str(resolved.repo), "config.json",
                                        revision=resolved.revision))
        except Exception as exc:  # network, auth, unknown repo or revision: one line
            raise hub_missing(resolved, f"could not be fetched ({type(exc).__name__})") from None
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ModelSpecError(f"model {resolved.repo!r}: {path} is not valid JSON ({exc}): "
                             "delete it from the Hugging Face cache and fetch it again") from None


def hub_commit(resolved: HubRef) -> str | None:
    """The commit a hub revision resolves to in the cache (snapshots/<commit>/), if cached."""
    path = _hub_config_path(resolved)
    return path.parent.name if path is not None else None


def hub_elements(resolved: HubRef) -> int | None:
    """How many weights a hub model has, before any is loaded: from the safetensors headers of
    its cached snapshot when every shard is there, else (online) from the hub's safetensors
    metadata (headers only, nothing downloaded); None when neither says."""
    path = _hub_config_path(resolved)
    if path is not None:
        if _every_shard_cached(path.parent):
            counted = safetensors_elements(path.parent)
            if counted is not None:
                return counted
    if hub_offline():
        return None
    from huggingface_hub import get_safetensors_metadata

    try:
        found = get_safetensors_metadata(str(resolved.repo), revision=resolved.revision)
    except Exception:  # no safetensors, network, auth: loading says what is wrong
        return None
    return sum(found.parameter_count.values())


def _every_shard_cached(folder: Path) -> bool:
    """Whether a cached snapshot holds every shard its index names (True without an index;
    False when the index cannot be read)."""
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return True
    try:
        shards = json.loads(index.read_text())["weight_map"].values()
        return all((folder / shard).is_file() for shard in shards)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False
