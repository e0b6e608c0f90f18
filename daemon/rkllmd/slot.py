"""The model slot: one operation at a time, waiters served first come, first served.

Generations wait in a bounded queue (a full one is refused at once with a retry
hint); administrative operations (load, unload) always queue. Closing refuses
new work and turns away whoever was still waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from .errors import QueueFull, ShuttingDown
from .metrics import Metrics


class ModelSlot:
    def __init__(self, max_waiting: Callable[[], int], metrics: Metrics) -> None:
        self._lock = asyncio.Lock()  # CPython wakes lock waiters in arrival order
        self._max_waiting = max_waiting
        self._metrics = metrics
        self.waiting = 0
        self.closing = False

    def busy(self) -> bool:
        return self._lock.locked()

    @asynccontextmanager
    async def hold(self, *, bounded: bool) -> AsyncIterator[None]:
        self._admit(bounded)
        self.waiting += 1
        queued = time.monotonic()
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        self._metrics.queue_wait.observe(time.monotonic() - queued)
        try:
            if self.closing:
                raise ShuttingDown("the daemon is shutting down")
            yield
        finally:
            self._lock.release()

    def _admit(self, bounded: bool) -> None:
        if self.closing:
            raise ShuttingDown("the daemon is shutting down")
        if bounded and self._lock.locked() and self.waiting >= self._max_waiting():
            retry = min(60, 2 + 2 * self.waiting)
            raise QueueFull(
                f"the queue is full ({self.waiting} waiting); try again later", retry_after=retry
            )

    async def drain(self, seconds: float) -> bool:
        """Close, then wait for the holder to finish; False if it is still running."""
        self.closing = True
        try:
            async with asyncio.timeout(seconds):
                await self._lock.acquire()
        except TimeoutError:
            return False
        self._lock.release()
        return True
