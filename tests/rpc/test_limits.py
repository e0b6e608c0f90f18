"""Control socket limits: a connection cap and an idle timeout that spares calls in flight.

Real daemons on the librkllmrt double (20 ms per token, so a streamed chat lasts
as long as the test says), real Unix sockets.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.backends.conftest import NpuDaemon
from tests.helpers import DaemonProcess, RpcClient, RpcError, wait_for

IDLE = 1.0
CAP = 4
TOKEN_US = 20_000


def closed_by_daemon(sock: socket.socket, within: float) -> bool:
    """True once the daemon closes ``sock`` (EOF), False if it is still open after ``within``."""
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@contextlib.contextmanager
def clients(daemon: DaemonProcess, count: int) -> Iterator[list[RpcClient]]:
    opened = [RpcClient(daemon.socket, timeout=10) for _ in range(count)]
    try:
        yield opened
    finally:
        for client in opened:
            client.close()


def test_connections_beyond_the_cap_are_refused_with_a_reason(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env={"RKLLMD_CONTROL__MAX_CONNECTIONS": str(CAP)})
    with clients(daemon, CAP) as admitted:
        for client in admitted:  # each one is served: all four are really in
            assert client.call("status")["state"] == "ready"
        extra = RpcClient(daemon.socket, timeout=10)
        try:
            answer = extra.read_message()
            assert answer["id"] is None
            assert answer["error"]["code"] == -32015
            assert answer["error"]["data"] == {"code": "too_many_connections", "limit": CAP}
            assert closed_by_daemon(extra.sock, 5)
        finally:
            extra.close()
        wait_for(lambda: "refused a connection from pid" in daemon.log(), 5, "the refusal logged")
        assert admitted[0].call("status")["state"] == "ready"  # the admitted ones go on
        admitted[0].close()

        # A place freed is a place taken (the close reaches the daemon asynchronously).
        def admitted_again() -> bool:
            late = RpcClient(daemon.socket, timeout=10)
            try:
                return bool(late.call("status")["state"] == "ready")
            except (RpcError, ConnectionError, OSError):
                return False
            finally:
                late.close()

        wait_for(admitted_again, 10, "a connection admitted after one closed", interval=0.1)


def test_a_flood_of_refusals_is_logged_once(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env={"RKLLMD_CONTROL__MAX_CONNECTIONS": "1"})
    with clients(daemon, 1) as (holder,):
        assert holder.call("status")["state"] == "ready"
        for _ in range(50):
            refused = RpcClient(daemon.socket, timeout=10)
            try:
                assert refused.read_message()["error"]["data"]["code"] == "too_many_connections"
            finally:
                refused.close()
    assert daemon.log().count("refused a connection from pid") == 1


def test_rkllmctl_reports_the_refusal(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env={"RKLLMD_CONTROL__MAX_CONNECTIONS": "1"})
    with clients(daemon, 1) as (holder,):
        assert holder.call("status")["state"] == "ready"
        ctl = [sys.executable, "-m", "rkllmctl", "--socket", str(daemon.socket), "status"]
        for _ in range(5):  # the refusal can break its send: it still reads the reason
            result = subprocess.run(ctl, capture_output=True, text=True, timeout=30)
            assert result.returncode == 1, result.stderr
            assert "too many control connections" in result.stderr


@pytest.fixture
def idle_daemon(npu_daemon: NpuDaemon) -> DaemonProcess:
    return npu_daemon(
        env={
            "RKLLMD_CONTROL__IDLE_SECONDS": str(IDLE),
            "RKLLM_DOUBLE_TOKEN_DELAY_US": str(TOKEN_US),
            # the same pace when make test-fast swaps the double for the fake backend
            "_RKLLMD_TEST_FAKE_TOKEN_SECONDS": str(TOKEN_US / 1e6),
        }
    )


def test_an_idle_connection_is_closed(idle_daemon: DaemonProcess) -> None:
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(str(idle_daemon.socket))
        partial.connect(str(idle_daemon.socket))
        partial.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')  # a line never finished
        assert closed_by_daemon(silent, IDLE * 10)
        assert closed_by_daemon(partial, IDLE * 10)
    finally:
        silent.close()
        partial.close()


def test_requests_keep_a_connection_alive(idle_daemon: DaemonProcess) -> None:
    client = idle_daemon.client(timeout=10)
    started = time.monotonic()
    while time.monotonic() - started < IDLE * 4:
        assert client.call("status")["state"] == "ready"
        time.sleep(IDLE / 3)


def test_calls_in_flight_are_never_cut(idle_daemon: DaemonProcess) -> None:
    long = int(IDLE * 3 / (TOKEN_US / 1e6))  # three idle periods of tokens
    client = idle_daemon.client(timeout=30)
    messages = [{"role": "user", "content": f"[[repeat:{long}]]"}]
    budget = {"max_tokens": long, "ignore_eos": True}
    # Streamed: token notifications the whole time, no request from the client.
    streamed = client.call("chat", messages=messages, stream=True, **budget)
    assert streamed["usage"]["completion_tokens"] == long
    # Not streamed: silence both ways for three idle periods.
    quiet = client.call("chat", messages=messages, **budget)
    assert quiet["usage"]["completion_tokens"] == long
    # Once nothing is in flight the clock runs again.
    assert closed_by_daemon(client.sock, IDLE * 10)


@pytest.mark.skipif(
    os.environ.get("_RKLLMD_TEST_BACKEND") == "fake", reason="the fake backend loads at once"
)
def test_a_progress_follower_is_not_cut(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(
        env={
            "RKLLMD_CONTROL__IDLE_SECONDS": str(IDLE),
            "RKLLM_DOUBLE_INIT_US": str(int(IDLE * 3 * 1e6)),  # a load of three idle periods
        },
        load=False,
    )
    client = daemon.client(timeout=30)
    status = client.call("load", model="Qwen2.5-0.5B-Instruct_W8A8_RK3588", progress=True)
    assert status["state"] == "ready"
    assert client.notifications, "the load sent no progress"
    assert client.call("status")["state"] == "ready"  # the connection is still served
