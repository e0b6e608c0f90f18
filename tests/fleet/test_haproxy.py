"""Three daemons behind the HAProxy configuration of docs/scale-out.md (`make test-fleet`).

Every daemon serves the librkllmrt double at 20 ms per token; which board served a
request is told twice, by the double's own call log and by HAProxy's X-Served-By.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import openai

from tests.fleet.harness import (
    MODEL,
    Fleet,
    Outcome,
    chat_body,
    fleet,
    kill_during_streams,
    stream_once,
)
from tests.helpers import RpcClient, wait_for


def openai_stream(url: str, tokens: int) -> str:
    """One streamed chat through the official client; the board that served it."""
    body = chat_body(tokens)
    with (
        openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client,
        client.chat.completions.with_streaming_response.create(
            model=MODEL, messages=body["messages"], max_tokens=tokens, stream=True
        ) as response,
    ):
        served_by = response.headers["X-Served-By"]
        text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
    assert text == " tok" * tokens, text
    return served_by


def test_requests_spread_over_the_instances() -> None:
    with fleet(3) as f:
        with ThreadPoolExecutor(3) as pool:
            served = Counter(pool.map(lambda _: openai_stream(f.url, 10), range(24)))
        runs = {i.name: i.runs() for i in f.instances}
    assert sum(served.values()) == 24
    assert set(served) == {"b1", "b2", "b3"}, served
    # The doubles saw the same split HAProxy reported: no request was served twice.
    assert runs == dict(served), (runs, served)


def served_by_sequence(f: Fleet, count: int) -> list[str]:
    return [openai_stream(f.url, 5) for _ in range(count)]


def test_loading_and_failed_instances_leave_rotation() -> None:
    slow_load = {"RKLLM_DOUBLE_INIT_US": "6000000"}
    with fleet(3, per_instance_env={"b2": slow_load}) as f:
        _, b2, b3 = f.instances
        # b2 reloads its model with another context size (6 s in rkllm_init); b3's
        # worker dies as in an NPU crash, which leaves it `failed` (a load that
        # fails keeps the previous model serving: that board stays in rotation).
        reloader = RpcClient(b2.daemon.socket)
        try:
            reload = reloader.start("load", model=MODEL, ctx_size=2048)
            os.kill(b3.daemon.call("status")["worker_pid"], signal.SIGKILL)
            wait_for(lambda: b3.daemon.call("status")["state"] == "failed", 20, "b3 failed")
            f.proxy.wait_state("b2", "DOWN", timeout=20)
            f.proxy.wait_state("b3", "DOWN", timeout=20)
            assert b2.daemon.call("status")["state"] == "loading"  # still: the check was why
            runs_before = (b2.runs(), b3.runs())
            served = served_by_sequence(f, 6)
            assert served == ["b1"] * 6, served
            assert (b2.runs(), b3.runs()) == runs_before
            reloader.finish(reload)
        finally:
            reloader.close()
        f.proxy.wait_state("b2", "UP", timeout=20)
        served = served_by_sequence(f, 6)
        assert "b2" in served and "b3" not in served, served
        assert f.proxy.states()["b3"] == "DOWN"


def test_sigkill_loses_only_that_instances_streams() -> None:
    with fleet(3) as f:
        outcomes, killed = asyncio.run(kill_during_streams(f, "b2", clients=9, after_kill=4.0))
        f.proxy.wait_state("b2", "DOWN", timeout=20)
        log = f.proxy.log()
    failed = [o for o in outcomes if not o.ok]
    # The streams b2 had begun and not finished when it died: certainly lost.
    cut = [
        o
        for o in outcomes
        if o.served_by == "b2" and o.first_byte and o.first_byte < killed
        if o.ended is not None and o.ended >= killed
    ]
    assert cut, "b2 had no stream running at the kill"
    assert failed == [o for o in cut if not o.ok], (failed, log)
    # Requests queued on b2 (no byte yet) and requests made after the kill: all served.
    after = [o for o in outcomes if o.started > killed]
    assert after and all(o.ok for o in after), [o.error for o in after if not o.ok]
    assert all(o.served_by != "b2" for o in after)


async def occupy(session: aiohttp.ClientSession, url: str) -> asyncio.Task[Outcome]:
    """A long stream straight to one board (HAProxy does not count it), running."""
    outcome = Outcome(time.monotonic())
    task = asyncio.create_task(stream_once(session, url, 1000, outcome))
    while outcome.first_byte is None:
        assert not task.done(), outcome.error
        await asyncio.sleep(0.02)
    return task


async def full_boards_and_no_boards(f: Fleet) -> None:
    b1, b2, b3 = f.instances
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        held = [await occupy(session, b1.daemon.http_url)]
        # b1 refuses with 503 queue_full; HAProxy sends those requests to b2 and b3.
        for _ in range(6):
            outcome = await stream_once(session, f.url, 5, Outcome(time.monotonic()))
            assert outcome.ok, outcome.error
            assert outcome.served_by in ("b2", "b3"), outcome.served_by
        held += [await occupy(session, b.daemon.http_url) for b in (b2, b3)]
        # Every board full: the last board's own 503 reaches the client, Retry-After kept.
        async with session.post(f"{f.url}/v1/chat/completions", json=chat_body(5)) as response:
            assert response.status == 503
            assert int(response.headers["Retry-After"]) >= 1
            assert (await response.json())["error"]["code"] == "queue_full"
        for instance in f.instances:
            f.kill(instance.name)
        for task in held:
            assert not (await task).ok  # cut by the kill
        for instance in f.instances:
            await asyncio.to_thread(f.proxy.wait_state, instance.name, "DOWN", 20)
        # No board up: HAProxy's own 503, in the OpenAI error shape, with Retry-After.
        async with session.post(f"{f.url}/v1/chat/completions", json=chat_body(5)) as response:
            assert response.status == 503
            assert response.headers["Retry-After"] == "5"
            assert (await response.json())["error"]["code"] == "no_instance_available"


def test_full_boards_pass_requests_on_and_503_keeps_retry_after() -> None:
    with fleet(3, env={"RKLLMD_QUEUE__MAX_WAITING": "0"}) as f:
        asyncio.run(full_boards_and_no_boards(f))
