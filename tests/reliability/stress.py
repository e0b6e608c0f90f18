"""Shared helpers of the overload/fault/lifecycle reliability tests (not a conftest:
tests/reliability/ is shared with the fuzzing suite)."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tests.backends.conftest import MODEL_ID, CallLog
from tests.helpers import DaemonProcess


def record(scenario: str, **figures: Any) -> None:
    """Append measured figures for docs/reliability.md (RELIABILITY_FIGURES=path)."""
    line = json.dumps({"scenario": scenario, **figures}, sort_keys=True)
    print(line)
    path = os.environ.get("RELIABILITY_FIGURES")
    if path:
        with open(path, "a") as handle:
            handle.write(line + "\n")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


# --- /proc views of the daemon ----------------------------------------------------------


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, state, comm) of every direct child of ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm_end = stat.rindex(")")
        fields = stat[comm_end + 2 :].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0], stat[stat.index("(") + 1 : comm_end]))
    return found


def zombies(pid: int) -> list[tuple[int, str, str]]:
    return [c for c in children(pid) if c[1] == "Z"]


def settle_fds(pid: int, baseline: int, timeout: float = 15.0, slack: int = 2) -> int:
    """Wait until the daemon's fd count is back within ``slack`` of ``baseline``."""
    deadline = time.monotonic() + timeout
    while True:
        now = fd_count(pid)
        if now <= baseline + slack or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


# --- raw HTTP ----------------------------------------------------------------------------


def chat_body(content: str, *, model: str = MODEL_ID, stream: bool = False, **extra: Any) -> bytes:
    body = {"model": model, "stream": stream, "messages": [{"role": "user", "content": content}]}
    body.update(extra)
    return json.dumps(body).encode()


def http_request(path: str, body: bytes | None = None, method: str = "POST") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + (body or b"")


def open_stream(daemon: DaemonProcess, content: str, **extra: Any) -> socket.socket:
    """Start a streamed chat on a raw socket (the caller reads or hangs up)."""
    conn = socket.create_connection(("127.0.0.1", daemon.http_port), timeout=30)
    conn.sendall(http_request("/v1/chat/completions", chat_body(content, stream=True, **extra)))
    return conn


def read_until(conn: socket.socket, marker: bytes, limit: int = 1 << 20) -> bytes:
    data = b""
    while marker not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before {marker!r}: {data[-300:]!r}")
        data += chunk
        assert len(data) < limit
    return data


def runs_with(call_log: CallLog, marker: str) -> list[dict[str, Any]]:
    return [r for r in call_log.runs() if marker in (r.get("input") or "")]
