"""base layer: files written so that nothing is lost. A file is replaced whole or not at all (a
temporary file beside it, then ``os.replace``); a full disk is one error naming the path and the
space; a cache entry is a folder sealed with a record of its files (sizes and sha256), checked
before each use, rebuilt with one line when it is not whole, and built by one process at a
time (a ``filelock`` per entry: the others wait, then read it)."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import InterpError

RECORD = "pytest_interp.json"  # the seal of a cache entry: its files and who made it


class DiskFullError(InterpError):
    """No space left where pytest-interp writes; nothing was replaced."""


def cache_dir() -> Path:
    """Where converted models live: $PYTEST_INTERP_CACHE_DIR or ~/.cache/pytest-interp."""
    env = os.environ.get("PYTEST_INTERP_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "pytest-interp"


def disk_full(path: Path, needed: int | None = None,
              fix: str = "free space there") -> DiskFullError:
    """The one error for a full disk at ``path``: what is free, what was needed, the fix."""
    where = path if path.is_dir() else path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    need = f", about {size(needed)} needed" if needed else ""
    return DiskFullError(f"no space left on the device of {path} ({size(free)} free{need}): "
                         f"{fix}; nothing there was replaced")


def size(n: int) -> str:
    """Bytes as people read them: 1.5 GiB, 540 MiB, 200 KiB."""
    if n >= 2**30:
        return f"{n / 2**30:.1f} GiB"
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk or quota, or a library's error wrapping one (safetensors
    names it StorageFull)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "StorageFull" in text


def part_of(path: Path) -> Path:
    """The temporary file beside ``path`` that this process writes before replacing it; those
    that killed processes left (their pid is gone) are removed first."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.part"):
        pid = stale.name[len(path.name) + 2:-len(".part")]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return path.with_name(f".{path.name}.{os.getpid()}.part")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: Path, data: str | bytes, fix: str = "free space there") -> None:
    """Write ``path`` whole or not at all: a reader (or a run killed half-way) sees the old
    file or the new one. A full disk raises ``DiskFullError`` and leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    part = part_of(path)
    try:
        with part.open("wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, len(raw), fix) from None
        raise
    finally:
        part.unlink(missing_ok=True)


def file_digest(path: Path) -> str:
    """sha256 of every byte of ``path`` (hex), cached per (path, size, mtime, ctime, inode)
    under the cache dir, so an unchanged file is read once (a write changes its mtime)."""
    path = path.resolve()
    stat = path.stat()
    key = f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ctime_ns}\0{stat.st_ino}"
    record = cache_dir() / "digests" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.sha256"
    try:
        cached = record.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        cached = ""
    if re.fullmatch(r"[0-9a-f]{64}", cached):
        return cached
    with path.open("rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    with suppress(OSError):  # a read-only or full cache costs time only
        atomic_write(record, digest)
    return digest


def seal(folder: Path, version: int, **made_by: str) -> None:
    """Write ``folder``'s record: every file's size and sha256, the entry's format version
    and what made it (library versions, the source)."""
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size,
                                                "sha256": file_digest(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != RECORD}
    atomic_write(folder / RECORD, json.dumps(
        {"format": version, "made_by": made_by, "files": files}, indent=2) + "\n")


def problem(folder: Path, version: int) -> str | None:
    """Why the cache entry ``folder`` cannot be used, or None: it is whole (every file its
    record names, of that size and content, made by this format version)."""
    if not folder.is_dir():
        return "is missing"
    try:
        record = json.loads((folder / RECORD).read_text(encoding="utf-8"))
        files = record["files"]
        made = record["format"]
    except FileNotFoundError:
        return f"has no {RECORD} (its build was interrupted)"
    except (OSError, ValueError, KeyError, TypeError):
        return f"has an unreadable {RECORD}"
    if made != version:
        return f"was made in format {made}, this version reads format {version}"
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            return f"lacks {name}"
        size = path.stat().st_size
        if size != want["size"]:
            return f"has {name} of {size} bytes, {want['size']} when made (truncated?)"
        if file_digest(path) != want["sha256"]:
            return f"has {name} with other content than when made (corrupted)"
    return None


def say(line: str) -> None:
    """One line to stderr, where pytest's capture does not hide it."""
    print(f"pytest-interp: {line}", file=sys.__stderr__, flush=True)


@contextmanager
def entry_lock(target: Path, what: str) -> Iterator[None]:
    """The lock of cache entry ``target``: the first process takes it, the others wait, saying
    so once. The OS releases it when its holder dies, so a killed run never blocks the next."""
    from filelock import FileLock, Timeout

    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another process building {what} ({target}) ...")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def cached(target: Path, version: int, build: Callable[[Path], dict[str, str]], what: str,
           needed: Callable[[], int] | None = None) -> Path:
    """The cache entry ``target``, whole: used as it is, or (re)built once across processes by
    ``build(work)``, which fills a fresh folder and returns what made it; the folder is sealed
    and renamed into place. A damaged entry is rebuilt with one line saying why; a full disk
    raises ``DiskFullError`` (saying ``needed()`` bytes) and leaves no partial entry."""
    if problem(target, version) is None:
        return target
    with entry_lock(target, what):
        why = problem(target, version)  # another process may have built it meanwhile
        if why is None:
            return target
        for stale in target.parent.glob(f".{target.name}.*.build"):  # killed builds' leftovers
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():
            say(f"the cached {what} in {target} {why}: rebuilding it")
            shutil.rmtree(target)
        work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".build",
                                     dir=target.parent))
        try:
            made_by = build(work)
            seal(work, version, **made_by)
            os.rename(work, target)
        except Exception as exc:
            if is_disk_full(exc):
                raise disk_full(target.parent, needed() if needed else None,
                                "free space there or set "
                                "PYTEST_INTERP_CACHE_DIR to a larger disk") from None
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def versions(*names: str) -> dict[str, str]:
    """``{name: version}`` of installed distributions (what made a cache entry)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        with suppress(PackageNotFoundError):
            out[name] = version(name)
    return out
