"""aclose_fully: a stream's close runs to its end through repeated cancels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from rkllmd.closing import aclose_fully


async def _consumer(closed: list[str], release: asyncio.Event, closing: asyncio.Event) -> None:
    async def stream() -> AsyncGenerator[int, None]:
        try:
            yield 1
            await asyncio.sleep(3600)
            yield 2
        finally:
            closing.set()
            await release.wait()  # like waiting for the worker to confirm the abort
            closed.append("stream")

    events = stream()
    await events.__anext__()
    try:
        await asyncio.sleep(3600)
    finally:
        try:
            await aclose_fully(events)
        finally:
            closed.append("bookkeeping")


async def _cancel_twice_during_the_close() -> tuple[list[str], asyncio.Task[None]]:
    closed: list[str] = []
    release, closing = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(_consumer(closed, release, closing))
    await asyncio.sleep(0)
    task.cancel()  # the client hangs up
    await closing.wait()
    task.cancel()  # a second cancel while the stream closes
    await asyncio.sleep(0.01)
    assert closed == []  # still closing: the second cancel did not cut it short
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    return closed, task


def test_the_close_and_the_bookkeeping_survive_a_second_cancel() -> None:
    closed, task = asyncio.run(_cancel_twice_during_the_close())
    assert closed == ["stream", "bookkeeping"]
    assert task.cancelled()


def test_errors_of_the_close_reach_the_caller() -> None:
    async def failing() -> AsyncGenerator[int, None]:
        try:
            yield 1
        finally:
            raise RuntimeError("the worker pipe broke")

    async def run() -> None:
        events = failing()
        await events.__anext__()
        await aclose_fully(events)

    with pytest.raises(RuntimeError, match="pipe broke"):
        asyncio.run(run())
