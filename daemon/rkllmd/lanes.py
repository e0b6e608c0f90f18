"""Bounded, separate thread pools ("lanes") for the daemon's blocking work.

asyncio's default executor is one pool for everything: six pulls on a slow link
held all of its threads, and a rescan, a SIGHUP reload or a remove then waited
behind them. Each kind of blocking work gets its own lane with its own bound, so
one kind can only ever wait for itself: the registry's scans, the store's pulls,
the store's removals.

Lane threads are daemon threads. A thread stuck in a call nobody can interrupt (a
Hub trickling its listing) must never keep the process from exiting; whoever
waits on it gives up (cancel, deadline) and the thread ends when its call does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

_Item = tuple[Callable[[], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


class Lane:
    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self._max = threads
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._closed = False

    @property
    def busy(self) -> int:
        """Threads running a call now (a figure for logs and tests)."""
        with self._lock:
            return len(self._threads) - self._idle

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args)`` in one of this lane's threads. Cancelling the caller stops
        waiting at once; a call that has not started yet is then never run."""
        if self._closed:
            raise RuntimeError(f"lane {self.name} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((lambda: fn(*args, **kwargs), future, loop))
        self._grow()
        return await future

    def close(self) -> None:
        """Let idle threads end; busy ones end after their call (nobody waits for them)."""
        self._closed = True
        with self._lock:
            for _ in self._threads:
                self._queue.put(None)

    def _grow(self) -> None:
        with self._lock:
            # Enough idle threads for what is queued, or at the bound: no new thread.
            if self._queue.qsize() <= self._idle or len(self._threads) >= self._max:
                return
            thread = threading.Thread(
                target=self._work, name=f"rkllmd-{self.name}-{len(self._threads)}", daemon=True
            )
            self._threads.append(thread)
            self._idle += 1
        thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            call, future, loop = item
            with self._lock:
                self._idle -= 1
            try:
                if not future.cancelled():  # read across threads: at worst we run it anyway
                    self._settle(loop, future, call)
            finally:
                # Nothing of the call outlives it here (a scan's result is 100,000 objects).
                del item, call, future, loop
                with self._lock:
                    self._idle += 1

    @staticmethod
    def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], call: Any) -> None:
        try:
            result = call()
        except BaseException as exc:  # handed to the awaiting task, which decides
            error = exc
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(_set_exception, future, error)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_set_result, future, result)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
