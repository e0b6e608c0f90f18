"""Capture what the runtime prints while it loads a model, and read facts from it.

The runtime writes its own log lines (``I rkllm: rkllm-runtime version: …``,
``rkllm-toolkit version: …, max_context_limit: N, npu_core_num: K, …``) to
stdout/stderr through C stdio. During ``rkllm_init`` both descriptors point
into a pipe; every line is copied on to the real stderr (so the journal still
has it) and kept for the model's properties.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import threading
from collections.abc import Iterator
from typing import Any

_PAIR = re.compile(r"([A-Za-z][A-Za-z0-9_ -]*?)\s*:\s*([^,]+)")
_LIMIT = re.compile(r"max_context_limit\[(\d+)\]")
_PATHS = re.compile(r"(?:/[\w.+-]+)+/?")
_KEYS = {
    "rkllm_runtime_version": "runtime_version",
    "rknpu_driver_version": "driver_version",
    "platform": "platform",
    "rkllm_toolkit_version": "toolkit_version",
    "max_context_limit": "max_context_limit",
    "npu_core_num": "npu_core_num",
    "target_platform": "target_platform",
    "model_dtype": "model_dtype",
}
MAX_LINES = 200


@contextlib.contextmanager
def capture_native_output() -> Iterator[list[str]]:
    """Collect lines written to fds 1 and 2 inside the block (tee'd to stderr)."""
    lines: list[str] = []
    read_end, write_end = os.pipe()
    saved_out, saved_err = os.dup(1), os.dup(2)
    _flush_c_stdio()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)
    reader = threading.Thread(target=_pump, args=(read_end, saved_err, lines), daemon=True)
    reader.start()
    try:
        yield lines
    finally:
        _flush_c_stdio()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        reader.join(timeout=5)
        os.close(saved_err)


def _flush_c_stdio() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def _pump(fd: int, tee: int, lines: list[str]) -> None:
    pending = b""
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            with contextlib.suppress(OSError):
                os.write(tee, chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            lines.extend(c.decode("utf-8", "replace").rstrip("\r") for c in complete)
    if pending:
        lines.append(pending.decode("utf-8", "replace"))
    del lines[:-MAX_LINES]


def parse_facts(lines: list[str]) -> dict[str, Any]:
    """runtime/toolkit versions, driver, platform, context limit, NPU cores, dtype."""
    facts: dict[str, Any] = {}
    for line in lines:
        body = line.split("rkllm:", 1)[-1]
        for key, value in _PAIR.findall(body):
            name = _KEYS.get(re.sub(r"[ -]+", "_", key.strip().lower()))
            if name is None:
                continue
            text = value.strip()
            facts[name] = int(text) if text.isdigit() else text
        if (limit := _LIMIT.search(line)) is not None:
            facts["max_context_limit"] = int(limit.group(1))
    return facts


def error_lines(lines: list[str]) -> list[str]:
    """The runtime's error lines, with filesystem paths removed (messages go to clients)."""
    errors = [ln for ln in lines if ln.startswith("E ") or " error" in ln.lower()]
    return [_PATHS.sub("<path>", ln.split("rkllm:", 1)[-1].strip()) for ln in errors]
