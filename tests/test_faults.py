"""Faults injected for real, each with what survived and that the next run succeeds: processes
killed (SIGKILL) at several points of building a cache entry (a stand-in build, and the real
conversion of a GGUF file) and of writing snapshots, truncated
and byte-flipped cache files, an entry of another format, a stale lock, four processes building
one entry at once, a full disk (ENOSPC raised at the write call), SIGTERM in the middle of a
run."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import namedtuple
from pathlib import Path

import pytest

from pytest_interp import storage
from pytest_interp.storage import RECORD, DiskFullError, atomic_write, cached, problem

from .pytester_helpers import ini

pytest_plugins = ["pytester"]

BUILDER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path

    from pytest_interp import storage

    target, kill_at, log, peers = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), \\
        int(sys.argv[4])
    (log.parent / f"started.{os.getpid()}").touch()

    def die(point):
        if point == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    def build(work):
        with log.open("a") as out:
            out.write(f"{os.getpid()}\\n")
        die("start")
        (work / "a.bin").write_bytes(b"a" * 100_000)
        die("one file")
        deadline = time.time() + 60
        while len(list(log.parent.glob("started.*"))) < peers and time.time() < deadline:
            time.sleep(0.05)  # every peer has started: they reach the lock while it is held
        time.sleep(1.0 if peers > 1 else 0)
        (work / "b.bin").write_bytes(b"b" * 50_000)
        if kill_at == "sealed":  # after the record is written, before the rename
            os.rename = lambda *args: die("sealed")
        return {"made": "test"}

    path = storage.cached(target, 1, build, "test entry")
    print(sorted(p.name for p in path.iterdir()))
""")
WHOLE = "['a.bin', 'b.bin', 'pytest_interp.json']"


def _build(tmp_path: Path, kill_at: str = "never", peers: int = 1) -> subprocess.Popen:
    script = tmp_path / "builder.py"
    script.write_text(BUILDER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache" / "entry"),
                             kill_at, str(tmp_path / "builds.log"), str(peers)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTEST_INTERP_CACHE_DIR": str(tmp_path / "d")})


def _builds(tmp_path: Path) -> int:
    log = tmp_path / "builds.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.parametrize("kill_at", ["start", "one file", "sealed"])
def test_a_build_killed_at_any_point_leaves_nothing_half_made(tmp_path, kill_at):
    killed = _build(tmp_path, kill_at)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    target = tmp_path / "cache" / "entry"
    assert not target.exists()  # the work folder is never the entry
    assert problem(target, 1) == "is missing"
    again = _build(tmp_path)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.strip() == WHOLE and _builds(tmp_path) == 2
    assert problem(target, 1) is None
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".entry.lock", "entry"]


# The real conversion of a GGUF file (tests/tiny_gguf.py: a tiny llama with SmolLM2's first
# 1,024 tokens), killed at three points, then four processes loading it at once: each a child
# forked from one process that imported transformers once; after each kill, the entry's state
# and the killed builds' folders; after the four, their exit codes and how many converted.
KILL_CONVERSION = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path

    import gguf
    import transformers
    import transformers.modeling_utils as modeling

    from pytest_interp.backends.loading import conversion_dir, load_hf, resolve_spec
    from pytest_interp.backends.specs import CONVERSION_VERSION
    from pytest_interp.storage import problem

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    def arm(point):
        if point == "de-quantizing":  # at the 10th of the file's 20 tensors
            real, calls = gguf.dequantize, []
            def dequantize(*args):
                calls.append(1)
                return die() if len(calls) == 10 else real(*args)
            gguf.dequantize = dequantize
        elif point == "writing the weights":  # model.safetensors half written
            real_save = modeling.safe_save_file
            def save(tensors, filename, *args, **kwargs):
                real_save(tensors, filename, *args, **kwargs)
                os.truncate(filename, os.path.getsize(filename) // 2)
                die()
            modeling.safe_save_file = save
        elif point == "sealed":  # the record written, the folder not yet renamed into place
            os.rename = die

    spec = resolve_spec(sys.argv[1])
    entry = conversion_dir(spec)
    for point in sys.argv[2:]:
        pid = os.fork()
        if pid == 0:
            arm(point)
            load_hf(spec)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        left = len(list(entry.parent.glob(f".{entry.name}.*.build")))
        print(f"{point}: {'killed' if killed else status}; the entry "
              f"{problem(entry, CONVERSION_VERSION)}; {left} killed build(s) left", flush=True)

    # The next run: four processes load the model at once; one converts it, the others wait.
    log = Path(sys.argv[1]).with_suffix(".conversions")
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:
            real = transformers.AutoModelForCausalLM.from_pretrained
            def from_pretrained(*args, **kwargs):
                if "gguf_file" in kwargs:  # the conversion reads the GGUF file
                    with log.open("a") as out:
                        out.write(f"{os.getpid()}\\n")
                return real(*args, **kwargs)
            transformers.AutoModelForCausalLM.from_pretrained = from_pretrained
            load_hf(spec)
            os._exit(0)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    print(f"4 at once: exit codes {codes}; {len(log.read_text().splitlines())} conversion(s)")
""")


@pytest.mark.slow
def test_a_real_conversion_killed_at_any_point_is_made_whole_once_by_four_next_runs(
        tmp_path, monkeypatch):
    from pytest_interp.backends.loading import conversion_dir, load_hf, resolve_spec
    from pytest_interp.backends.specs import CONVERSION_VERSION

    from .tiny_gguf import write_tiny_gguf

    gguf = write_tiny_gguf(tmp_path / "tiny.gguf")
    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(tmp_path / "cache"))
    points = ["de-quantizing", "writing the weights", "sealed"]
    done = subprocess.run([sys.executable, "-c", KILL_CONVERSION, str(gguf), *points],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [  # never a half-made entry; each build clears the last
        *(f"{point}: killed; the entry is missing; 1 killed build(s) left" for point in points),
        "4 at once: exit codes [0, 0, 0, 0]; 1 conversion(s)"], done.stderr[-3000:]
    assert "waiting for another process building float32 conversion of" in done.stderr
    entry = conversion_dir(resolve_spec(str(gguf)))
    assert problem(entry, CONVERSION_VERSION) is None
    after = load_hf(resolve_spec(str(gguf)))  # from the entry the four made
    assert sorted(p.name for p in entry.parent.iterdir() if entry.name in p.name) == [
        f".{entry.name}.lock", entry.name]  # the killed builds' folders are gone
    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(tmp_path / "fresh"))
    fresh = load_hf(resolve_spec(str(gguf)))  # a conversion no fault touched
    ids = fresh.tokenizer("The capital of France is", return_tensors="pt").input_ids
    assert after.tokenizer("The capital of France is").input_ids == ids[0].tolist()
    import torch

    with torch.no_grad():
        assert torch.equal(after.model(ids).logits, fresh.model(ids).logits)


def _entry(tmp_path: Path, builds: list[int]) -> Path:
    def build(work: Path) -> dict[str, str]:
        builds.append(1)
        (work / "a.bin").write_bytes(b"a" * 1000)
        (work / "sub").mkdir()
        (work / "sub" / "b.bin").write_bytes(b"b" * 500)
        return {"made": "test"}

    return cached(tmp_path / "entry", 3, build, "test entry")


@pytest.mark.parametrize("damage, why", [
    ("truncate", "has sub/b.bin of 499 bytes, 500 when made (truncated?)"),
    ("flip", "has a.bin with other content than when made (corrupted)"),
    ("drop", "lacks sub/b.bin"),
    ("record", f"has no {RECORD} (its build was interrupted)"),
    ("garble", f"has an unreadable {RECORD}"),
    ("format", "was made in format 2, this version reads format 3"),
])
def test_a_damaged_cache_entry_is_rebuilt_with_one_line(tmp_path, monkeypatch, capfd, damage,
                                                        why):
    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(tmp_path / "d"))
    builds: list[int] = []
    entry = _entry(tmp_path, builds)
    assert _entry(tmp_path, builds) == entry and len(builds) == 1  # whole: used as it is
    record = entry / RECORD
    if damage == "truncate":
        (entry / "sub" / "b.bin").write_bytes(b"b" * 499)
    elif damage == "flip":
        with (entry / "a.bin").open("r+b") as fh:  # one byte, same size
            fh.seek(500)
            fh.write(b"x")
    elif damage == "drop":
        (entry / "sub" / "b.bin").unlink()
    elif damage == "record":
        record.unlink()
    elif damage == "garble":
        record.write_text(record.read_text()[:40])
    else:
        record.write_text(record.read_text().replace('"format": 3', '"format": 2'))
    capfd.readouterr()
    assert problem(entry, 3) == why
    _entry(tmp_path, builds)
    assert len(builds) == 2 and problem(entry, 3) is None
    assert capfd.readouterr().err == (f"pytest-interp: the cached test entry in {entry} {why}: "
                                      "rebuilding it\n")
    assert json.loads(record.read_text())["made_by"] == {"made": "test"}


def test_four_processes_build_one_entry_once(tmp_path):
    children = [_build(tmp_path, peers=4) for _ in range(4)]
    done = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0, 0], done
    assert [out.strip() for out, _ in done] == [WHOLE] * 4
    assert _builds(tmp_path) == 1
    waited = [err for _, err in done if "waiting for another process building test entry" in err]
    assert len(waited) >= 1


def test_a_stale_lock_never_blocks(tmp_path):
    holder = tmp_path / "holder.py"
    holder.write_text(textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from pytest_interp import storage

        with storage.entry_lock(Path({str(tmp_path / 'cache' / 'entry')!r}), "test entry"):
            os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lock
    """))
    done = subprocess.run([sys.executable, str(holder)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / "cache" / ".entry.lock").exists()
    start = time.perf_counter()
    out, err = _build(tmp_path).communicate(timeout=60)
    assert out.strip() == WHOLE and "waiting" not in err
    assert time.perf_counter() - start < 30


# -- a full disk --------------------------------------------------------------------------------

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def full_disk(monkeypatch, tmp_path):
    """Writes of files named ``*.part`` or inside ``*.build`` folders fail with ENOSPC after
    1 KiB, at the write call (no file system of a set size can be made without root), and the
    disk reports 200 KiB free."""
    real = io.open

    class Full(io.FileIO):
        written = 0

        def write(self, data):  # type: ignore[override]
            Full.written += len(data)
            if Full.written > 1024:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(data)

    def opener(file, mode="r", *args, **kwargs):
        name = str(file)
        if ("w" in mode or "a" in mode) and (name.endswith(".part") or ".build" in name):
            raw = Full(name, mode.replace("b", "").replace("t", "") or "w")
            return raw if "b" in mode else io.TextIOWrapper(io.BufferedWriter(raw), **{
                k: v for k, v in kwargs.items() if k in ("encoding", "newline")})
        return real(file, mode, *args, **kwargs)

    monkeypatch.setattr(io, "open", opener)
    monkeypatch.setattr("builtins.open", opener)
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda path: Usage(10**9, 0, 200 * 1024))
    return Full


def test_a_full_disk_leaves_the_old_file_and_says_what_is_needed(tmp_path, full_disk):
    report = tmp_path / "report.html"
    report.write_text("the previous report")
    with pytest.raises(DiskFullError) as err:
        atomic_write(report, "x" * 3 * 2**20)
    assert str(err.value) == (f"no space left on the device of {report} (200 KiB free, about "
                              "3 MiB needed): free space there; nothing there was replaced")
    assert report.read_text() == "the previous report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_a_full_disk_while_building_leaves_no_partial_entry(tmp_path, full_disk):
    def build(work: Path) -> dict[str, str]:
        (work / "weights.bin").write_bytes(b"w" * 4096)
        return {}

    with pytest.raises(DiskFullError) as err:
        cached(tmp_path / "cache" / "entry", 1, build, "test entry", needed=lambda: 540 * 2**20)
    assert str(err.value) == (
        f"no space left on the device of {tmp_path / 'cache'} (200 KiB free, about 540 MiB "
        "needed): free space there or set PYTEST_INTERP_CACHE_DIR to a larger disk; nothing "
        "there was replaced")
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".entry.lock"]


# -- snapshots and sessions -----------------------------------------------------------------

SNAPSHOT_TESTS = """
    def test_lens(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.logit_lens("{prompt}", positions=None)

    def test_attention(interp_model, interp_snapshot):
        assert interp_snapshot == interp_model.attention()
"""
KILL_IN_WRITE = """
import builtins, os, signal

real = builtins.open


def open(file, mode="r", *args, **kwargs):  # killed after the first line of the new file
    handle = real(file, mode, *args, **kwargs)
    if str(file).endswith(".part") and "w" in mode:
        write = handle.write

        def dying(data):
            write(data)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        handle.write = dying
    return handle


builtins.open = open
"""


@pytest.mark.slow
def test_a_snapshot_update_killed_mid_write_leaves_the_old_file(pytester):
    ini(pytester, model="tiny-random-llama", noise_floor="none")
    pytester.makepyfile(test_m=SNAPSHOT_TESTS.format(prompt="The cat sat on the"))
    assert pytester.runpytest("--snapshot-update").ret == 0
    stored = pytester.path / "__snapshots__" / "test_m.interp"
    before = stored.read_bytes()
    pytester.makepyfile(test_m=SNAPSHOT_TESTS.format(prompt="A dog ran to the"))
    pytester.makeconftest(KILL_IN_WRITE)
    killed = pytester.runpytest_subprocess("--snapshot-update")  # a process of its own
    assert killed.ret == -signal.SIGKILL
    assert stored.read_bytes() == before  # the old file, whole
    assert [p.name for p in stored.parent.iterdir() if p.name.endswith(".part")] != []
    (pytester.path / "conftest.py").unlink()
    assert pytester.runpytest("--snapshot-update").ret == 0
    after = stored.read_bytes()
    assert after != before and b"A dog ran to the" in after
    assert sorted(p.name for p in stored.parent.iterdir()) == ["test_m.interp"]  # leftover gone
    assert pytester.runpytest().ret == 0


@pytest.mark.slow
def test_sigterm_ends_the_run_as_ctrl_c_does_and_writes_the_report(pytester):
    ini(pytester, model="tiny-random-llama", report="report.html")
    started = pytester.path / "started"
    pytester.makepyfile(test_m=f"""
        import time
        from pathlib import Path

        def test_one(interp_model):
            assert interp_model.info.n_layers == 3

        def test_two():
            Path({str(started)!r}).write_text("x")
            time.sleep(60)

        def test_three():
            pass
    """)
    run = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"],
                           cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.time() + 120
    while not started.exists() and time.time() < deadline:
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "KeyboardInterrupt" in out and "signal SIGTERM" in out
    assert "1 passed" in out
    page = (pytester.path / "report.html").read_text()
    assert ("INTERRUPTED: the run was stopped (Ctrl-C or SIGTERM) after 1 of 3 tests; this "
            "report shows those") in page
    assert not list(pytester.path.glob(".*.part"))


# -- memory ---------------------------------------------------------------------------------

def test_a_model_that_does_not_fit_is_refused_before_it_loads(tmp_path, monkeypatch):
    import psutil

    from pytest_interp.backends.loading import load_hf, resolve_spec
    from pytest_interp.backends.memory import safetensors_elements

    loaded = load_hf(resolve_spec("tiny-random-llama"))
    loaded.model.save_pretrained(tmp_path / "m")
    loaded.tokenizer.save_pretrained(tmp_path / "m")
    n = sum(p.numel() for p in loaded.model.parameters())
    assert safetensors_elements(tmp_path / "m") == n  # counted from the header alone
    free = type("Free", (), {"available": 12 * 2**20})()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    with pytest.raises(Exception) as err:
        load_hf(resolve_spec(str(tmp_path / "m")))
    need = int(n * 4 * 1.25) / 2**20
    assert str(err.value) == (
        f"model spec {str(tmp_path / 'm')!r} has {n / 1e6:,.0f}M weights: in float32 it needs "
        f"about {need:.0f} MiB of memory, and cpu has 12 MiB available: load it in less "
        "(--interp-dtype=bfloat16 halves float32), on a larger device (--interp-device=cuda, "
        "or device_map= in your pytest_interp_load_model), or run it remotely (--interp-remote)")
    load_hf(resolve_spec(str(tmp_path / "m")), dtype="bfloat16")  # half: it fits
