"""Lifecycle under load: SIGTERM and SIGHUP during several streams, and model
switches while requests queue (no request is ever answered by the wrong model)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.backends.conftest import NpuDaemon
from tests.fixtures.build_double import write_model
from tests.helpers import DaemonProcess, wait_for
from tests.reliability.stress import (
    MODEL_ID,
    CallLog,
    children,
    record,
)

ENV = {"RKLLM_DOUBLE_TOKEN_DELAY_US": "10000"}
STREAMS = 4


async def stream(
    url: str, content: str, model: str = MODEL_ID, first_token: asyncio.Event | None = None
) -> dict[str, Any]:
    """One SSE chat; what arrived and how it ended (``first_token`` set on the first)."""
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    out: dict[str, Any] = {"status": None, "tokens": 0, "done": False, "error": None}
    try:
        timeout = aiohttp.ClientTimeout(total=60)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/v1/chat/completions", json=body) as resp,
        ):
            out["status"] = resp.status
            if resp.status != 200:
                out["error"] = (await resp.json())["error"]["code"]
                return out
            async for raw in resp.content:
                line = raw.decode().strip()
                if line == "data: [DONE]":
                    out["done"] = True
                elif line.startswith("data: "):
                    event = json.loads(line[6:])
                    if "error" in event:
                        out["error"] = event["error"].get("code")
                    elif event["choices"] and event["choices"][0]["delta"].get("content"):
                        # The double's tokens are " tok"; a slow reader may get several
                        # in one chunk (the NPU path joins what piles up), so count text.
                        out["tokens"] += event["choices"][0]["delta"]["content"].count(" tok")
                        if first_token is not None:
                            first_token.set()
    except aiohttp.ClientError as exc:
        out["error"] = type(exc).__name__
    return out


def arrived(daemon: DaemonProcess, before: int) -> int:
    """Streams that reached the slot: queued, generating or done (one status snapshot)."""
    status = daemon.call("status")
    return int(status["queue"]["waiting"] + status["counters"]["generations"] - before)


async def streams_with_signal(
    daemon: DaemonProcess, sig: signal.Signals, tokens: int
) -> list[dict[str, Any]]:
    """STREAMS streams in order; the signal once the first has a token and all arrived."""
    before = daemon.call("status")["counters"]["generations"]
    generating = asyncio.Event()
    tasks = [
        asyncio.create_task(
            stream(daemon.http_url, f"s0 [[repeat:{tokens}]]", first_token=generating)
        )
    ]
    await asyncio.wait_for(generating.wait(), 30)
    for i in range(1, STREAMS):
        tasks.append(asyncio.create_task(stream(daemon.http_url, f"s{i} [[repeat:{tokens}]]")))
        await asyncio.to_thread(
            wait_for, lambda n=i: arrived(daemon, before) > n, 15, f"stream {i} to arrive"
        )
    daemon.proc.send_signal(sig)
    return list(await asyncio.gather(*tasks))


def test_sigterm_during_streams(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env={**ENV, "RKLLMD_DRAIN_SECONDS": "1"})
    pid = daemon.proc.pid
    worker = daemon.call("status")["worker_pid"]
    t0 = time.monotonic()
    results = asyncio.run(streams_with_signal(daemon, signal.SIGTERM, 1000))
    code = daemon.proc.wait(20)
    stop_seconds = time.monotonic() - t0
    assert code == 0
    wait_for(lambda: daemon.notify.has("STOPPING=1"), 10, "STOPPING=1")
    first, queued = results[0], results[1:]
    # The running stream is cut at the drain deadline with an error event, then [DONE].
    assert first["status"] == 200 and 0 < first["tokens"] < 1000, first
    assert first["error"] is not None and first["done"], first
    # The queued ones never ran: each got a clear refusal (or an error event), none hung.
    for out in queued:
        assert out["tokens"] == 0 and (out["error"] is not None or out["status"] == 503), out
    assert len(call_log.runs()) == 1
    assert call_log.calls("rkllm_abort") and call_log.calls("rkllm_destroy")
    wait_for(lambda: not children(pid) and not Path(f"/proc/{worker}").exists(), 15, "worker gone")
    record(
        "sigterm-under-load",
        streams=STREAMS,
        exit_code=code,
        stop_seconds=round(stop_seconds, 1),
        drain_seconds=1,
        first_stream=f"{first['tokens']} tokens then error {first['error']} + [DONE]",
        queued=[o["error"] or o["status"] for o in queued],
    )


def test_sighup_during_streams(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env=ENV)
    worker = daemon.call("status")["worker_pid"]
    # 1 s per stream: the signal certainly comes while streams still run or wait.
    results = asyncio.run(streams_with_signal(daemon, signal.SIGHUP, 100))
    wait_for(lambda: daemon.notify.has("RELOADING=1"), 15, "RELOADING=1")
    for out in results:
        assert out == {"status": 200, "tokens": 100, "done": True, "error": None}, out
    # A stream's [DONE] is written before its generation is counted: wait for the count.
    wait_for(lambda: daemon.call("status")["counters"]["completed"] == STREAMS, 10, "all counted")
    assert daemon.call("status")["worker_pid"] == worker
    record("sighup-under-load", streams=STREAMS, tokens_each=100, all_complete=True)


async def _switch_storm(daemon: DaemonProcess, models: list[str], n: int) -> list[Any]:
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(i: int) -> tuple[int, str, int, dict[str, Any]]:
            model = models[(i // 2) % len(models)]  # AABBAABB...: switches and reuse
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"w{i:02d} [[repeat:3]]"}],
            }
            async with session.post(f"{daemon.http_url}/v1/chat/completions", json=body) as r:
                return i, model, r.status, await r.json()

        tasks = []
        for i in range(n):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.01)
        return list(await asyncio.gather(*tasks))


def test_model_switch_while_requests_queue(
    npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog
) -> None:
    other = "Llama-3.2-1B-Instruct_W8A8_RK3588"
    write_model(npu_models, f"{other}.rkllm")
    daemon = npu_daemon(env={**ENV, "RKLLMD_QUEUE__MAX_WAITING": "64"})
    results = asyncio.run(_switch_storm(daemon, [MODEL_ID, other], 24))
    pids_by_model: dict[int, str] = {}
    for init in call_log.calls("rkllm_init"):
        pids_by_model[init["pid"]] = Path(init["model_path"]).stem
    ran_on: dict[str, str] = {}
    for run in call_log.runs():
        marker = run["input"].rsplit("[[repeat:", 1)[0].split()[-1]
        ran_on[marker] = pids_by_model[run["pid"]]
    wrong = 0
    for i, model, status, body in results:
        assert status == 200, body
        assert body["model"] == model
        assert ran_on[f"w{i:02d}"] == model, (i, model, ran_on)
        wrong += body["model"] != model
    loads = len(call_log.calls("rkllm_init"))
    assert loads >= 3  # it really switched back and forth
    record(
        "model-switch-under-queue",
        requests=len(results),
        models=2,
        loads=loads,
        answered_by_wrong_model=wrong,
    )
