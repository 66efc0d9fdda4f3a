"""Weights are identified by every byte: files equal in size and in their first and last
4 MiB (what pytest-interp 0.1 hashed) but different in between are different models, get
different GGUF conversions, and a snapshot failure says the weights changed."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest

from pytest_interp.backends.loading import (
    conversion_dir,
    file_digest,
    gguf_file,
    resolve_spec,
    weights_fingerprint,
)

pytest_plugins = ["pytester"]

MiB = 1024 * 1024


def partial_fingerprint(path: Path) -> str:
    """What pytest-interp 0.1 hashed: the size, the first and the last 4 MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(4 * MiB))
        fh.seek(max(4 * MiB, size - 4 * MiB))
        digest.update(fh.read(4 * MiB))
    return digest.hexdigest()[:16]


def same_ends(a: Path, b: Path) -> bool:
    """Equal in size and in the first and last 4 MiB, different in between."""
    return a.stat().st_size == b.stat().st_size \
        and partial_fingerprint(a) == partial_fingerprint(b) \
        and a.read_bytes() != b.read_bytes()


def test_a_file_is_hashed_whole_and_once(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(tmp_path / "cache"))
    data = bytearray(hashlib.sha256(b"seed").digest() * (12 * MiB // 32))
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(bytes(data))
    data[6 * MiB] ^= 1  # one bit, in the middle
    b.write_bytes(bytes(data))
    assert same_ends(a, b)
    assert file_digest(a) == hashlib.sha256(a.read_bytes()).hexdigest()
    assert file_digest(a) != file_digest(b)

    reads = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda *x: reads.append(x) or real(*x))
    file_digest(a)
    assert reads == []  # unchanged (path, size, mtime): read from the cache dir
    b.write_bytes(a.read_bytes())  # rewritten: a new mtime
    assert file_digest(b) == file_digest(a)
    assert len(reads) == 1


@pytest.mark.slow
def test_gguf_files_differing_in_the_middle_get_their_own_conversion(tmp_path, monkeypatch):
    from gguf import GGUFReader

    monkeypatch.setenv("PYTEST_INTERP_CACHE_DIR", str(tmp_path / "cache"))
    source = gguf_file(resolve_spec("smollm2-135m"))
    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    shutil.copyfile(source, a)
    shutil.copyfile(source, b)
    tensor = next(t for t in GGUFReader(b).tensors if t.name == "blk.15.attn_output.weight")
    with b.open("r+b") as fh:  # one late head's output projection zeroed, as a user might
        fh.seek(int(tensor.data_offset))
        fh.write(bytes(int(tensor.n_bytes)))
    assert same_ends(a, b)
    ra, rb = resolve_spec(str(a)), resolve_spec(str(b))
    assert ra.fingerprint() != rb.fingerprint()
    assert ra.fingerprint() == f"sha256:{hashlib.sha256(a.read_bytes()).hexdigest()[:16]}"
    assert conversion_dir(ra) != conversion_dir(rb)


def _tiny_dir(path: Path) -> Path:
    from pytest_interp.backends.loading import load_hf

    loaded = load_hf(resolve_spec("tiny-random-llama"))
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return path


PROMPT_IDS = [20000, 20001, 20002, 20003]  # embedding rows in the middle of the file


def _edited_copy(source: Path, target: Path) -> Path:
    """A copy of a saved tiny llama with the prompt's embedding rows (in the middle of
    model.safetensors) scaled by -3: the same size, the same first and last 4 MiB."""
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    with weights.open("r+b") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        start = 8 + n + header["model.embed_tokens.weight"]["data_offsets"][0]
        import numpy as np

        for token in PROMPT_IDS:
            fh.seek(start + token * 64 * 4)
            row = np.frombuffer(fh.read(64 * 4), dtype="<f4") * -3
            fh.seek(start + token * 64 * 4)
            fh.write(row.astype("<f4").tobytes())
    assert same_ends(source / "model.safetensors", weights)
    return target


def test_a_snapshot_failure_says_the_weights_changed(pytester, tmp_path):
    from pytest_interp.backends.loading import offline_tokenizer

    base = _tiny_dir(tmp_path / "base")
    edited = _edited_copy(base, tmp_path / "edited")
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)
    prompt = offline_tokenizer().decode(PROMPT_IDS)
    pytester.makepyfile(test_s=f"""
        def test_lens(interp_model, interp_snapshot):
            assert interp_snapshot == interp_model.lens({prompt!r})
    """)
    assert pytester.runpytest(f"--interp-model={base}", "--snapshot-update").ret == 0
    assert pytester.runpytest(f"--interp-model={copy}").ret == 0  # the same bytes
    result = pytester.runpytest(f"--interp-model={edited}")
    result.assert_outcomes(failed=1)
    was, now = (resolve_spec(str(p)).fingerprint() for p in (base, edited))
    assert was != now
    result.stdout.fnmatch_lines([f"*(the weights changed ({was} -> {now}))*"])
    assert "environment changed" not in result.stdout.str()


def test_a_model_object_is_fingerprinted_by_every_parameter(load_raw_hf):
    import copy

    import torch

    model = load_raw_hf("tiny-random-llama").model
    twin = copy.deepcopy(model)
    assert weights_fingerprint(twin) == weights_fingerprint(model)
    with torch.no_grad():  # one element of one middle weight
        twin.model.layers[1].self_attn.o_proj.weight[3, 5] += 1e-3
    assert weights_fingerprint(twin) != weights_fingerprint(model)
    assert weights_fingerprint(model).startswith("sha256:")


@pytest.mark.parametrize(("old", "new", "note"), [
    ("sha256:aaaa", "sha256:bbbb", "the weights changed (sha256:aaaa -> sha256:bbbb)"),
    ("97bd540928490fa0", "sha256:bbbb",
     "the snapshot's weights fingerprint 97bd540928490fa0 predates full-content hashes, so "
     "whether the weights changed is not known; --snapshot-update records sha256:bbbb"),
    ("sha256:aaaa", "sha256:aaaa", "the weights are unchanged (sha256:aaaa): the environment "
                                   "changed (device, threads or kernels), not the model"),
])
def test_what_a_failure_says_of_the_weights(old, new, note):
    from pytest_interp.snapshot import weights_note

    assert weights_note({"weights": old}, {"weights": new}) == note

