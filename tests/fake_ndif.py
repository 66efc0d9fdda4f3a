"""A fake NDIF server for remote-execution tests: another process holding the real weights.

The client's model is weightless (meta device). A request is serialized exactly as nnsight's
``RemoteBackend`` sends it and handed to a server process that loads the model with plain
transformers and cannot import pytest_interp (as on NDIF: whatever the trace needs from us must
travel by value). The server runs the trace on its model and returns only the values the trace
saved, as ``torch.save`` bytes, which are pushed into the caller's frame as nnsight's client
does.
"""

from __future__ import annotations

import io
import multiprocessing
import sys
from typing import Any

import torch
from nnsight.schema.request import RequestModel
from nnsight.tracing import tracer as nnsight_tracer
from nnsight.tracing.backend import Backend
from nnsight.tracing.util import push


class FakeNDIF(Backend):
    """``trace(..., backend=FakeNDIF(directory))``: serves the HF model saved in directory."""

    def __init__(self, directory: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(directory, child), daemon=True)
        self._process.start()
        reply = self._conn.recv() if self._conn.poll(300) else "no reply in 300 s"
        if reply != "ready":
            raise RuntimeError(f"fake NDIF server failed to start: {reply}")
        self.requests = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def __reduce__(self) -> tuple:
        """The request carries the tracer and the tracer its backend: travel as nothing (the
        real client's backend is a host and a key)."""
        return (object, ())

    def __call__(self, tracer: Any) -> None:
        blob = RequestModel.serialize(tracer, compress=False)
        self.requests += 1
        self.bytes_sent += len(blob)
        self._conn.send_bytes(blob)
        if not self._conn.poll(300):
            raise RuntimeError("fake NDIF: no reply from the server in 300 s")
        status, data = self._conn.recv()
        if status == "error":
            raise RuntimeError(f"fake NDIF: the job failed on the server: {data}")
        self.bytes_received += len(data)
        result = torch.load(io.BytesIO(data), weights_only=False)
        for value in result.values():
            nnsight_tracer.mark(value)
        push(tracer.info.frame, result)

    def close(self) -> None:
        self._conn.send_bytes(b"")
        self._process.join(timeout=30)


MODEL_ENV = "FAKE_NDIF_MODEL_DIR"
_SERVERS: dict[str, FakeNDIF] = {}


def from_env(lm: Any) -> FakeNDIF:
    """The factory for $PYTEST_INTERP_NDIF_BACKEND=tests.fake_ndif:from_env: one server per
    process for the directory in $FAKE_NDIF_MODEL_DIR."""
    import os

    directory = os.environ[MODEL_ENV]
    if directory not in _SERVERS:
        _SERVERS[directory] = FakeNDIF(directory)
    return _SERVERS[directory]


def close_all() -> int:
    """Stop every server; the number of requests they served."""
    served = sum(server.requests for server in _SERVERS.values())
    for server in _SERVERS.values():
        server.close()
    _SERVERS.clear()
    return served


class _NoPytestInterp:
    """A meta path finder: the server has no pytest_interp installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "pytest_interp" or name.startswith("pytest_interp."):
            raise ModuleNotFoundError(f"No module named {name!r} (not on the NDIF server)")
        return None


def _serve(directory: str, conn: Any) -> None:
    import traceback
    import warnings

    sys.meta_path.insert(0, _NoPytestInterp())
    try:
        from nnsight import TransformersModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(directory, attn_implementation="eager")
        tokenizer = AutoTokenizer.from_pretrained(directory)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lm = TransformersModel(model.eval(), task="text-generation", tokenizer=tokenizer)
        persistent = lm._remoteable_persistent_objects()
    except Exception as exc:  # reported to the client
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    conn.send("ready")
    while blob := conn.recv_bytes():
        try:
            request = RequestModel.deserialize(blob, persistent)
            nnsight_tracer.inc()
            try:
                with torch.inference_mode():
                    request.execute(request.info.code)
                saves = nnsight_tracer._saves()
                out = {k: v for k, v in request.info.frame.f_locals.items() if id(v) in saves}
            finally:
                nnsight_tracer.dec()
            buffer = io.BytesIO()
            torch.save(out, buffer)
            conn.send(("ok", buffer.getvalue()))
        except Exception:  # reported to the client
            conn.send(("error", traceback.format_exc(limit=-3)))
