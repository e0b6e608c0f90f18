"""100 clients that vanish mid-stream or during prefill, then a burst of hang-ups.

Every run the NPU started is aborted, and afterwards nothing leaked: the
daemon's fd count is back to its baseline, it has exactly one worker, the queue
is empty and the next request is served.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from typing import Any

from tests.backends.conftest import NpuDaemon
from tests.helpers import wait_for
from tests.reliability.stress import (
    CallLog,
    chat_body,
    children,
    fd_count,
    http_request,
    open_stream,
    read_until,
    record,
    runs_with,
    settle_fds,
    zombies,
)

ENV = {
    "RKLLM_DOUBLE_TOKEN_DELAY_US": "10000",
    "RKLLM_DOUBLE_PREFILL_US": "400",  # ~250 prompt tokens below: ~100 ms of prefill
    "RKLLMD_QUEUE__MAX_WAITING": "128",
}
PADDING = "word " * 200


def hang_up(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()  # RST: the peer vanishes, as a killed client would


def test_hundred_vanishing_clients(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env=ENV)
    pid = daemon.proc.pid
    assert daemon.call("chat", messages=[{"role": "user", "content": "[[say:warm]]"}])
    workers = children(pid)
    baseline = fd_count(pid)
    started = time.monotonic()
    detect: list[float] = []
    for i in range(100):
        marker = f"v{i:03d}"
        mid_stream = i % 2 == 0
        padding = "" if mid_stream else f" {PADDING}"
        conn = open_stream(daemon, f"{marker}{padding} [[repeat:500]]")
        try:
            if mid_stream:  # after the first token
                read_until(conn, b"data: {")
                read_until(conn, b"tok")
            else:  # during prefill: as soon as the NPU has the prompt
                wait_for(lambda m=marker: runs_with(call_log, m), 10, "the run", interval=0.005)
        except BaseException:
            conn.close()
            raise
        aborts = len(call_log.calls("rkllm_abort"))
        t0 = time.monotonic()
        hang_up(conn)
        wait_for(
            lambda n=aborts: len(call_log.calls("rkllm_abort")) > n, 10, "abort", interval=0.005
        )
        detect.append(time.monotonic() - t0)
    elapsed = time.monotonic() - started
    wait_for(lambda: daemon.call("status")["counters"]["aborted"] == 100, 10, "100 aborted")
    runs = call_log.runs()
    assert len(call_log.calls("rkllm_abort")) == 100
    # A run aborted during prefill never produced a token.
    status = daemon.call("status")
    assert status["state"] == "ready" and status["queue"]["waiting"] == 0
    assert children(pid) == workers and not zombies(pid)
    fds = settle_fds(pid, baseline)
    assert fds <= baseline + 2, (fds, baseline)
    assert "never retrieved" not in daemon.log() and "was destroyed but" not in daemon.log()
    reply = daemon.call("chat", messages=[{"role": "user", "content": "[[say:still here]]"}])
    assert reply["message"]["content"] == "still here"
    detect.sort()
    record(
        "disconnects-sequential",
        clients=100,
        mid_stream=50,
        during_prefill=50,
        runs=len(runs) - 1,
        aborts=len(call_log.calls("rkllm_abort")),
        hangup_to_abort_p50_ms=round(detect[49] * 1000, 1),
        hangup_to_abort_max_ms=round(detect[-1] * 1000, 1),
        fds_baseline=baseline,
        fds_after=fds,
        seconds=round(elapsed, 1),
    )


def settled(counters: dict[str, int]) -> dict[str, int] | None:
    """``counters`` once every generation that started has an outcome, else None."""
    ended = counters["completed"] + counters["aborted"] + counters["failed"]
    return counters if ended == counters["generations"] else None


def quiet(status: dict[str, Any]) -> dict[str, Any] | None:
    """``status`` when nothing waits or runs and every started generation has ended."""
    idle = status["queue"]["waiting"] == 0 and status["state"] == "ready"
    return status if idle and settled(status["counters"]) else None


def abort_episodes(call_log: CallLog) -> int:
    """Generations that called rkllm_abort, told apart by the runs that ended between.

    One generation may call it more than once: an abort sent before rkllm_run has
    reset its abort state is sent again once the run has begun (the cancel window).
    A generation's calls all come before the next run ends, so calls with no
    rkllm_run_end between them count once (at worst two generations count as one,
    which only makes the bound below weaker)."""
    episodes, ended_since = 0, True
    for call in call_log.all():
        if call["fn"] == "rkllm_run_end":
            ended_since = True
        elif call["fn"] == "rkllm_abort":
            episodes += ended_since
            ended_since = False
    return episodes


async def _burst(port: int, clients: int, seed: int) -> None:
    """Clients that all connect at once and hang up at random moments (many while queued)."""
    rng = random.Random(seed)

    async def one(i: int) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                http_request("/v1/chat/completions", chat_body(f"b{i} [[repeat:40]]", stream=True))
            )
            await asyncio.sleep(rng.uniform(0, 1.5))
        finally:
            writer.transport.abort()  # also when the test fails: no unclosed transport

    await asyncio.gather(*(one(i) for i in range(clients)))


def test_burst_of_hang_ups_drains_the_queue(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env=ENV)
    pid = daemon.proc.pid
    assert daemon.call("chat", messages=[{"role": "user", "content": "[[say:warm]]"}])
    baseline = fd_count(pid)
    workers = children(pid)
    asyncio.run(_burst(daemon.http_port, 100, seed=7))
    # First every connection of the burst is gone on the daemon's side too: then no
    # request of the burst can still reach the queue after the checks below.
    fds = settle_fds(pid, baseline, timeout=30)
    assert fds <= baseline + 2, (fds, baseline)
    # Then one status snapshot in which nothing waits or runs and every generation
    # that started has ended (separate polls could each hold at different moments).
    status = wait_for(
        lambda: quiet(daemon.call("status")), 30, "the queue to drain and every run to end"
    )
    counters = status["counters"]
    runs = len(call_log.runs()) - 1
    # Every run that started either finished or was aborted; nothing is left over.
    assert counters["completed"] + counters["aborted"] == runs + 1, (counters, runs)
    ends = call_log.calls("rkllm_run_end")[1:]
    assert len(ends) == runs
    # A client can vanish in the instant after its run ended on its own: the daemon
    # counts that generation as aborted (the client never got the end), and its abort,
    # if one is sent at all, finds nothing running. So: every natively aborted run had
    # an rkllm_abort, every generation that sent one is counted as aborted, and no
    # aborted run is counted as completed.
    native_aborted = sum(end["aborted"] for end in ends)
    assert native_aborted <= abort_episodes(call_log) <= counters["aborted"]
    assert counters["completed"] - 1 <= runs - native_aborted
    assert children(pid) == workers and not zombies(pid)
    assert "never retrieved" not in daemon.log()
    reply = daemon.call("chat", messages=[{"role": "user", "content": "[[say:still here]]"}])
    assert reply["message"]["content"] == "still here"
    record(
        "disconnects-burst",
        clients=100,
        runs_started=runs,
        aborted=counters["aborted"],
        aborted_natively=native_aborted,
        completed_before_hangup=counters["completed"] - 1,
        never_started=100 - runs,
        fds_baseline=baseline,
        fds_after=fds,
    )
