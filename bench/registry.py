"""Benchmark: `list` over the control socket and `GET /v1/models` over HTTP with 1,000
models, and `entries()` in process.

Run as `.venv/bin/python bench/registry.py [--socket PATH] [--skip-daemon]`. Prints one
JSON line; exits 1 (with the error in the JSON) if the daemon part fails. Not a test:
nothing here asserts a duration.

The model files are small GGUF headers (name, architecture, context length, size label,
file type), so every card is as full as a real model's: the daemon reads them when it
scans, not per request.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rkllmd.catalog.registry import ModelRegistry

MODELS = 1000
REQUESTS = 500
ENTRIES_CALLS = 10_000
READY_TIMEOUT = 60.0


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def gguf_header(index: int) -> bytes:
    """A GGUF header as converters write it, up to the tokenizer (no tensors)."""
    keys: list[tuple[str, int, bytes]] = [
        ("general.architecture", 8, _gguf_string("llama")),
        ("general.name", 8, _gguf_string(f"Bench Model {index}")),
        ("general.size_label", 8, _gguf_string("135M")),
        ("llama.context_length", 4, struct.pack("<I", 8192)),
        ("general.file_type", 4, struct.pack("<I", 2)),
        ("tokenizer.ggml.model", 8, _gguf_string("gpt2")),
    ]
    body = b"".join(_gguf_string(k) + struct.pack("<I", t) + v for k, t, v in keys)
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(keys)) + body


def make_models(root: Path) -> None:
    """Small GGUF files, backdated so the daemon lists them without a settle wait."""
    past = time.time() - 3600
    for i in range(MODELS):
        path = root / f"bench-model-{i:04d}.Q4_0.gguf"
        path.write_bytes(gguf_header(i))
        os.utime(path, (past, past))


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(q * len(sorted_samples)))
    return sorted_samples[rank - 1]


def time_entries(models: Path) -> dict[str, float]:
    registry = ModelRegistry(models)
    asyncio.run(registry.scan())
    if len(registry.entries()) != MODELS:
        raise RuntimeError(f"registry lists {len(registry.entries())} models, not {MODELS}")
    samples = []
    for _ in range(ENTRIES_CALLS):
        start = time.perf_counter_ns()
        registry.entries()
        samples.append((time.perf_counter_ns() - start) / 1000)
    samples.sort()
    return {
        "entries_p50_us": round(percentile(samples, 0.50), 2),
        "entries_p99_us": round(percentile(samples, 0.99), 2),
    }


class Connection:
    """One JSON-RPC connection: a JSON text per line each way."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.last_id = 0

    def call(self, method: str) -> dict[str, Any]:
        self.last_id += 1
        request = {"jsonrpc": "2.0", "id": self.last_id, "method": method}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        while True:  # skip notifications, should the daemon send any
            line = self.reader.readline()
            if not line:
                raise ConnectionError("the daemon closed the connection")
            message: dict[str, Any] = json.loads(line)
            if message.get("id") == self.last_id:
                return message

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def model_count(response: dict[str, Any]) -> int | None:
    """Models in a `list` result, or None if the result has a shape we do not know."""
    if "error" in response:
        raise RuntimeError(f"list failed: {response['error']}")
    result = response.get("result")
    if isinstance(result, dict):
        result = result.get("models", result.get("data"))
    return len(result) if isinstance(result, list) else None


def connect(path: Path, daemon: subprocess.Popen[bytes]) -> Connection:
    """Wait until the socket exists and accepts a connection."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with status {daemon.returncode}")
        if path.exists():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            try:
                sock.connect(str(path))
                return Connection(sock)
            except OSError:
                sock.close()
        time.sleep(0.05)
    raise TimeoutError("the daemon socket did not answer in time")


def wait_listed(conn: Connection) -> None:
    """Wait until `list` answers with every model (the daemon may still be scanning)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        count = model_count(conn.call("list"))
        if count is None or count == MODELS:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the daemon lists {count} of {MODELS} models")
        time.sleep(0.1)


def time_list(conn: Connection) -> dict[str, float]:
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter_ns()
        conn.call("list")
        samples.append((time.perf_counter_ns() - start) / 1e6)
    samples.sort()
    return {
        "p50_ms": round(percentile(samples, 0.50), 3),
        "p99_ms": round(percentile(samples, 0.99), 3),
        "max_ms": round(samples[-1], 3),
    }


def time_http_models(port: int) -> dict[str, float]:
    """GET /v1/models on one keep-alive connection, until the whole body is read (the
    client's own JSON parsing, 3-4 ms for 300 KB in Python, is left out of the time)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        samples, size = [], 0
        for _ in range(REQUESTS):
            start = time.perf_counter_ns()
            conn.request("GET", "/v1/models")
            response = conn.getresponse()
            body = response.read()
            samples.append((time.perf_counter_ns() - start) / 1e6)
            cards = json.loads(body)["data"]
            if response.status != 200 or len(cards) != MODELS:
                raise RuntimeError(f"GET /v1/models: {response.status}, {len(cards)} cards")
            size = len(body)
    finally:
        conn.close()
    samples.sort()
    return {
        "http_models_p50_ms": round(percentile(samples, 0.50), 3),
        "http_models_p99_ms": round(percentile(samples, 0.99), 3),
        "http_models_max_ms": round(samples[-1], 3),
        "http_models_bytes": size,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def daemon_command(models: Path, sock: Path, port: int) -> list[str]:
    exe = Path(sys.executable).with_name("rkllmd")
    program = str(exe) if exe.exists() else "rkllmd"
    return [
        program,
        "--models-dir",
        str(models),
        "--socket",
        str(sock),
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
    ]


def stop(daemon: subprocess.Popen[bytes]) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def bench_daemon(models: Path, sock: Path, log: Path) -> dict[str, float]:
    port = free_port()
    with log.open("wb") as out:
        daemon = subprocess.Popen(
            daemon_command(models, sock, port), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        conn = connect(sock, daemon)
        try:
            wait_listed(conn)
            return {**time_list(conn), **time_http_models(port)}
        finally:
            conn.close()
    finally:
        stop(daemon)
        sock.unlink(missing_ok=True)  # ours: we checked it did not exist before the start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", type=Path, help="control socket path for the daemon")
    parser.add_argument("--skip-daemon", action="store_true", help="only time entries()")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))  # short: sun_path is 108 bytes
    sock: Path = args.socket or work / "ctl.sock"
    report: dict[str, Any] = {"bench": "registry", "models": MODELS, "n": REQUESTS}
    status = 0
    try:
        models = work / "models"
        models.mkdir()
        make_models(models)
        report.update(time_entries(models))
        if not args.skip_daemon:
            if sock.exists():
                raise RuntimeError(f"{sock} already exists; is a daemon running there?")
            report.update(bench_daemon(models, sock, work / "daemon.log"))
    except (OSError, RuntimeError, ValueError) as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
        log = work / "daemon.log"
        if log.exists():
            sys.stderr.write(log.read_text(errors="replace")[-4000:])
        status = 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report))
    return status


if __name__ == "__main__":
    sys.exit(main())
