"""Overload: 200 concurrent chats against a queue of 32 on the NPU double.

A blocker stream holds the slot for the whole storm, so the outcome is exact:
32 admitted, 168 refused with 503 + Retry-After, while /health and RPC status
are still answered; then the queue drains in FIFO order. Latencies are recorded
(docs/reliability.md), not asserted: what is asserted is what happened while
the slot was held.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from typing import Any

import aiohttp

from tests.backends.conftest import NpuDaemon
from tests.helpers import DaemonProcess, RpcClient, wait_for
from tests.reliability.stress import (
    MODEL_ID,
    CallLog,
    p99,
    record,
    rss_bytes,
)

QUEUE = 32
STORM = 200
ORDERED = 16
ENV = {"RKLLM_DOUBLE_TOKEN_DELAY_US": "10000", "RKLLMD_QUEUE__MAX_WAITING": str(QUEUE)}


def chat_json(marker: str, tokens: int = 2) -> dict[str, Any]:
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": f"{marker} [[repeat:{tokens}]]"}],
        "max_tokens": tokens,
    }


async def blocker(session: aiohttp.ClientSession, url: str, started: asyncio.Event) -> None:
    """A long stream (40 s of tokens) that holds the slot until cancelled (the client
    hangs up); the test checks that it was still running when the storm was over."""
    body = chat_json("blocker", 4000) | {"stream": True}
    async with session.post(f"{url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        async for _ in resp.content:
            started.set()


class Prober(threading.Thread):
    """/health over HTTP keep-alive and `status` over the control socket, every 10 ms.

    A thread with blocking sockets, so the figures are not the test's own event
    loop being busy with 200 clients.
    """

    def __init__(self, daemon: DaemonProcess) -> None:
        super().__init__(daemon=True)
        self.daemon_process = daemon
        self.stop = threading.Event()
        self.health: list[float] = []
        self.status: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _loop(self) -> None:
        with contextlib.ExitStack() as stack:
            rpc = RpcClient(self.daemon_process.socket, timeout=10)
            stack.callback(rpc.close)
            address = ("127.0.0.1", self.daemon_process.http_port)
            conn = stack.enter_context(socket.create_connection(address, timeout=10))
            reader = stack.enter_context(conn.makefile("rb"))
            self._probe(rpc, conn, reader)

    def _probe(self, rpc: RpcClient, conn: socket.socket, reader: Any) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert reader.readline().split()[1] == b"200"
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            self.health.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            state = rpc.call("status")["state"]
            self.status.append(time.perf_counter() - t0)
            assert state in ("generating", "ready"), state
            time.sleep(0.01)


async def storm(daemon: DaemonProcess) -> dict[str, Any]:
    url = daemon.http_url
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = asyncio.Event()
        hold = asyncio.create_task(blocker(session, url, started))
        await asyncio.wait_for(started.wait(), 30)
        pid = daemon.proc.pid
        rss_before = rss_bytes(pid)

        async def one(i: int) -> tuple[int, int, float, dict[str, Any], str | None]:
            t0 = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=chat_json(f"m{i:03d}")) as r:
                body = await r.json()
                return r.status, i, time.perf_counter() - t0, body, r.headers.get("Retry-After")

        # Ordered phase: ORDERED requests enter the queue one after another.
        ordered = []
        for i in range(ORDERED):
            ordered.append(asyncio.create_task(one(i)))
            await asyncio.to_thread(
                wait_for,
                lambda n=i + 1: daemon.call("status")["queue"]["waiting"] == n,
                10,
                "queued",
            )
        # The storm: STORM concurrent requests against the remaining room.
        prober = Prober(daemon)
        prober.start()
        await asyncio.sleep(0.3)  # a few samples before the storm
        tasks = [asyncio.create_task(one(ORDERED + i)) for i in range(STORM)]
        # Every refusal arrives while the blocker still holds the slot.
        expected = STORM - (QUEUE - ORDERED)
        deadline = time.monotonic() + 60
        while sum(t.done() for t in tasks) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        refused_while_held = not hold.done()
        waiting = await asyncio.to_thread(lambda: daemon.call("status")["queue"]["waiting"])
        # Keep probing the full queue: health and status answers that arrive now were
        # served while the slot was held and the queue was full.
        probed = len(prober.health), len(prober.status)
        await asyncio.to_thread(
            wait_for,
            lambda: len(prober.health) >= probed[0] + 10 and len(prober.status) >= probed[1] + 10,
            30,
            "probes answered while the queue is full",
        )
        full_after_probing = await asyncio.to_thread(
            lambda: daemon.call("status")["queue"]["waiting"]
        )
        held_after_probing = not hold.done()
        rss_peak = rss_bytes(pid)
        prober.stop.set()
        await asyncio.to_thread(prober.join)
        assert prober.error is None, prober.error
        hold.cancel()  # the client hangs up: the blocker is aborted, the queue drains
        first = await asyncio.gather(*ordered)
        results = await asyncio.gather(*tasks)
        await asyncio.gather(hold, return_exceptions=True)
        return {
            "ordered": first,
            "results": results,
            "refused_while_held": refused_while_held,
            "held_after_probing": held_after_probing,
            "full_after_probing": full_after_probing,
            "waiting": waiting,
            "health": prober.health,
            "status": prober.status,
            "rss_before": rss_before,
            "rss_peak": rss_peak,
        }


def test_storm_of_200_with_queue_of_32(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env=ENV)
    rss_start = rss_bytes(daemon.proc.pid)
    out = asyncio.run(storm(daemon))
    results = out["results"]
    refused = [r for r in results if r[0] == 503]
    admitted = [r for r in results if r[0] == 200]
    assert all(r[0] == 200 for r in out["ordered"])
    assert len(refused) == STORM - (QUEUE - ORDERED), sorted(r[0] for r in results)
    assert len(admitted) == QUEUE - ORDERED
    # No refusal waited for the slot: all came while the blocker still held it.
    assert out["refused_while_held"], "the blocker ended before the storm was refused"
    assert out["waiting"] == QUEUE
    for _, _, _, body, retry in refused:
        assert body["error"]["code"] == "queue_full"
        assert retry is not None and 0 < int(retry) <= 60
    refusal_p99 = p99([r[2] for r in refused])
    # /health and status were answered with the slot held and the queue full.
    assert out["held_after_probing"] and out["full_after_probing"] == QUEUE
    # FIFO: the NPU ran the ordered requests first, in their order, then the
    # storm's admitted ones; every answer came from its own request's run.
    wait_for(lambda: len(call_log.runs()) >= QUEUE + 1, 30, "every admitted run")
    run_markers = [_marker(r["input"]) for r in call_log.runs()[1:]]
    assert run_markers[:ORDERED] == [f"m{i:03d}" for i in range(ORDERED)]
    assert sorted(run_markers[ORDERED:]) == sorted(f"m{i:03d}" for _, i, _, _, _ in admitted)
    for _, _, _, body, _ in [*out["ordered"], *admitted]:
        assert body["model"] == MODEL_ID and body["choices"][0]["message"]["content"]
    health_p99, status_p99 = p99(out["health"]), p99(out["status"])  # recorded below
    rss_growth = out["rss_peak"] - rss_start
    assert rss_growth < 64 << 20
    state = daemon.call("status")
    assert state["queue"]["waiting"] == 0 and state["state"] == "ready"
    assert state["counters"]["aborted"] == 1  # the blocker
    record(
        "overload",
        requests=STORM + ORDERED,
        queue=QUEUE,
        admitted=len(admitted) + ORDERED,
        refused_503=len(refused),
        refusal_p99_ms=round(refusal_p99 * 1000, 1),
        health_p99_ms=round(health_p99 * 1000, 1),
        health_samples=len(out["health"]),
        status_p99_ms=round(status_p99 * 1000, 1),
        status_samples=len(out["status"]),
        rss_growth_kib=rss_growth // 1024,
    )


def _marker(prompt: str) -> str:
    at = prompt.rindex("[[repeat:")
    return prompt[:at].split()[-1]
