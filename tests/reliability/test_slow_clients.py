"""Slow and big clients: slowloris headers, dripped and oversize bodies, oversize RPC
lines, 1,000 idle HTTP and 1,000 control connections (over the control socket's cap).

Everything is bounded by a timeout or a limit (the server closes: a generous
deadline, not a measured bound), a normal request is still served meanwhile,
and the daemon's fd count returns to its baseline. How long each cut took is
recorded for docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import resource
import selectors
import socket
import time
from pathlib import Path

from tests.backends.conftest import NpuDaemon
from tests.helpers import DaemonProcess, RpcClient, read_http_response, wait_for
from tests.reliability.stress import (
    fd_count,
    record,
    settle_fds,
)

KEEPALIVE = 2.0
BODY_TIMEOUT = 2.0
MAX_BODY = 1 << 20
IDLE = 1000
CONTROL_CAP = 64  # the default control.max_connections
ENV = {
    "RKLLMD_HTTP__KEEPALIVE_SECONDS": str(KEEPALIVE),
    "RKLLMD_HTTP__BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    "RKLLMD_HTTP__MAX_BODY_BYTES": str(MAX_BODY),
}


def served_promptly(daemon: DaemonProcess, admin: RpcClient | None = None) -> float:
    """One normal HTTP request and one RPC call (on ``admin`` when given: a connection
    already in); the slower of the two, in seconds."""
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=5) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert conn.recv(100).startswith(b"HTTP/1.1 200")
    http = time.perf_counter() - t0
    t0 = time.perf_counter()
    status = admin.call("status") if admin else daemon.call("status")
    assert status["state"] == "ready"
    return max(http, time.perf_counter() - t0)


def refused_control(sockets: list[socket.socket], expected: int, timeout: float) -> int:
    """Read until ``expected`` of ``sockets`` got the too_many_connections line and EOF."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, bytearray())
    refused = 0
    deadline = time.monotonic() + timeout
    while refused < expected and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            try:
                chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
            except ConnectionResetError:
                chunk = b""
            if chunk:
                key.data.extend(chunk)
                continue
            selector.unregister(key.fileobj)
            answer = json.loads(bytes(key.data))
            assert answer["error"]["data"]["code"] == "too_many_connections", answer
            refused += 1
    selector.close()
    return refused


def closed_after(
    conn: socket.socket, drip: bytes | None, limit: float
) -> tuple[float, bytes, float | None]:
    """Drip ``drip`` every 0.5 s until the server closes.

    (seconds until closed, what it answered, seconds until the answer began)
    """
    conn.settimeout(0.5)
    t0 = time.monotonic()
    answer = b""
    answered: float | None = None
    while time.monotonic() - t0 < limit:
        try:
            if drip is not None:
                conn.sendall(drip)
            chunk = conn.recv(4096)
            if not chunk:
                return time.monotonic() - t0, answer, answered
            if answered is None:
                answered = time.monotonic() - t0
            answer += chunk
        except TimeoutError:
            continue
        except (BrokenPipeError, ConnectionResetError):
            return time.monotonic() - t0, answer, answered
    raise AssertionError(f"still open after {limit} s")


def test_slowloris_dripped_and_oversize(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env=ENV)
    pid = daemon.proc.pid
    baseline = fd_count(pid)
    port = daemon.http_port
    # Sockets in `with` blocks: a failing check must not leave them open (an unclosed
    # socket's ResourceWarning is an error in whichever test the collector runs in).
    # Headers dripped one line at a time, forever.
    with socket.create_connection(("127.0.0.1", port)) as loris:
        loris.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        loris_seconds, _, _ = closed_after(loris, b"X-Drip: 1\r\n", 30)
    # A body dripped one byte at a time after complete headers: 408.
    with socket.create_connection(("127.0.0.1", port)) as drip:
        drip.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
        )
        drip_seconds, answer, drip_answered = closed_after(drip, b" ", 30)
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    # An oversize body: 413 with an OpenAI-shaped error, before the body is read.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as big:
        payload = b'{"messages": "' + b"x" * (MAX_BODY + 10) + b'"}'
        big.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json"
            + f"\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
        )
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            big.sendall(payload)
        reply = read_http_response(big)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b'"error"' in reply
    # An oversize RPC line: an Invalid Request answer, the connection closed.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rpc:
        rpc.settimeout(30)
        rpc.connect(str(daemon.socket))
        line = b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": {"x": "'
        line += b"y" * (17 << 20)  # over the 16 MiB line limit (rpc/server.py)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            rpc.sendall(line)  # the daemon answers and hangs up before it is all sent
        received = b""
        with contextlib.suppress(ConnectionResetError):  # unread input makes the close an RST
            while chunk := rpc.recv(65536):
                received += chunk
    if received:  # the answer, when it beat the reset, is an Invalid Request
        error = json.loads(received.splitlines()[0])
        assert error["error"]["code"] == -32600 and error["id"] is None
    prompt = served_promptly(daemon)
    fds = settle_fds(pid, baseline)
    assert fds <= baseline + 2
    # The dripped body got its 408 (only the body timeout answers that) before the
    # close; how long each took is a figure, not a bound (a loaded machine is slower).
    assert drip_answered is not None
    record(
        "slow-and-big-clients",
        slowloris_cut_after_s=round(loris_seconds, 1),
        keepalive_s=KEEPALIVE,
        dripped_body_408_after_s=round(drip_answered, 1),
        dripped_body_closed_after_s=round(drip_seconds, 1),
        body_timeout_s=BODY_TIMEOUT,
        oversize_body_status=413,
        oversize_rpc_line="-32600 + close",
        normal_request_ms=round(prompt * 1000, 1),
        fds_baseline=baseline,
        fds_after=fds,
    )


def closed_by_peer(sock: socket.socket, deadline: float) -> bool:
    """True once the daemon has closed ``sock`` (EOF or reset) before ``deadline``."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_thousand_idle_connections(npu_daemon: NpuDaemon, npu_models: Path) -> None:
    daemon = npu_daemon(env=ENV)
    pid = daemon.proc.pid
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    daemon_limit = int(
        next(
            line.split()[3]
            for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
            if line.startswith("Max open files")
        )
    )
    assert soft > 2 * IDLE + 100, "the test itself needs the descriptors"
    admin = daemon.client()  # an admin already connected keeps working throughout
    assert admin.call("status")["state"] == "ready"
    baseline = fd_count(pid)
    control: list[socket.socket] = []
    http: list[socket.socket] = []
    try:
        # Control connections first: the admitted ones stay open (idle timeout 300 s),
        # so the count is a fact, not a race with the HTTP keep-alive timeout.
        for _ in range(IDLE):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            control.append(sock)
            sock.connect(str(daemon.socket))
        admitted = CONTROL_CAP - 1  # the admin holds one place
        refused = refused_control(control, IDLE - admitted, 30)
        assert refused == IDLE - admitted
        wait_for(lambda: fd_count(pid) <= baseline + admitted, 20, "refused sockets closed")
        assert fd_count(pid) >= baseline + admitted  # the admitted ones are all still in
        http.extend(socket.create_connection(("127.0.0.1", daemon.http_port)) for _ in range(IDLE))
        peak = fd_count(pid)
        during = served_promptly(daemon, admin)
        chat = admin.call("chat", messages=[{"role": "user", "content": "[[say:fine]]"}])
        assert chat["message"]["content"] == "fine"
        # Every idle HTTP connection was accepted and then closed by the keep-alive
        # timeout: the client sees the close (one left in the backlog would not).
        t0 = time.monotonic()
        deadline = t0 + KEEPALIVE * 3 + 10
        still_open = sum(not closed_by_peer(sock, deadline) for sock in http)
        assert still_open == 0, f"{still_open} idle HTTP connections never closed"
        http_closed = time.monotonic() - t0
        peak = max(peak, fd_count(pid))
        assert peak < daemon_limit
        # Admitted idle control connections stay until the idle timeout or they go.
        assert fd_count(pid) >= baseline + admitted
    finally:
        for sock in http + control:
            sock.close()
        admin.close()
    fds = settle_fds(pid, baseline - 1)
    assert fds <= baseline + 2, (fds, baseline)
    served = served_promptly(daemon)  # a figure for docs/reliability.md, not a test bound
    record(
        "idle-connections",
        http_idle=IDLE,
        control_connections=IDLE,
        control_admitted=admitted,
        control_refused=refused,
        fds_baseline=baseline,
        fds_peak=peak,
        daemon_fd_limit=daemon_limit,
        normal_request_during_ms=round(during * 1000, 1),
        normal_request_after_ms=round(served * 1000, 1),
        http_idle_closed_within_s=round(http_closed, 1),
        fds_after=fds,
    )
