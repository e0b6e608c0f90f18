"""The model's slots: up to ``capacity`` generations at once, administrative
operations alone, every waiter served first come, first served.

The resident model's backend says how many generations it runs together (the
NPU 1, llama.cpp its sequences). A generation holds as many slots as it has
choices; a load or unload holds the model exclusively, once every running
generation has ended. The queue is strict FIFO: a waiter that does not fit yet
blocks those behind it, so a request for n choices or a load cannot starve.

Generations wait in a bounded queue (a full one is refused at once with a retry
hint); administrative operations always queue. Closing refuses new work and
turns away whoever was still waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from .errors import QueueFull, ShuttingDown
from .metrics import Metrics


@dataclass(eq=False, slots=True)
class Hold:
    """One holder's share: ``weight`` slots, or the whole model when exclusive.

    ``alone`` is asked when the hold reaches the head of the queue: a request for a
    model that is not resident needs the model alone (to load it), but not if a
    load ahead of it brought that model in meanwhile.
    """

    weight: int
    alone: Callable[[], bool]
    exclusive: bool = False  # decided when granted
    granted: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ModelSlot:
    def __init__(self, max_waiting: Callable[[], int], metrics: Metrics) -> None:
        self._max_waiting = max_waiting
        self._metrics = metrics
        self.capacity = 1
        self.in_use = 0  # slots held by generations
        self._exclusive = False
        self._queue: deque[Hold] = deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = False

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def busy(self) -> bool:
        return self._exclusive or self.in_use > 0

    def set_capacity(self, capacity: int) -> None:
        """The resident model's number of slots (from its props, after a load)."""
        self.capacity = max(1, capacity)
        self._grant()

    @asynccontextmanager
    async def hold(
        self, *, bounded: bool, weight: int = 1, exclusive: bool | Callable[[], bool] = False
    ) -> AsyncIterator[Hold]:
        """Wait for ``weight`` slots (or the model alone), keep them for the block."""
        hold = Hold(weight, exclusive if callable(exclusive) else lambda: exclusive)
        self._admit(hold, bounded)
        self._queue.append(hold)
        queued = time.monotonic()
        self._grant()
        try:
            await hold.granted
        except BaseException:
            self._withdraw(hold)
            raise
        self._metrics.queue_wait.observe(time.monotonic() - queued)
        try:
            if self.closing:
                raise ShuttingDown("the daemon is shutting down")
            yield hold
        finally:
            self._release(hold)

    def share(self, hold: Hold) -> None:
        """Turn an exclusive hold into a share of ``hold.weight`` slots (after a load
        made on behalf of a generation), letting the waiters behind it in."""
        if hold.exclusive:
            hold.exclusive = False
            self._exclusive = False
            hold.weight = min(hold.weight, self.capacity)
            self.in_use += hold.weight
            self._grant()

    def _admit(self, hold: Hold, bounded: bool) -> None:
        if self.closing:
            raise ShuttingDown("the daemon is shutting down")
        if bounded and not self._fits_now(hold) and self.waiting >= self._max_waiting():
            retry = min(60, 2 + 2 * self.waiting)
            raise QueueFull(
                f"the queue is full ({self.waiting} waiting); try again later", retry_after=retry
            )

    def _fits_now(self, hold: Hold) -> bool:
        return not self._queue and self._fits(hold)

    def _fits(self, hold: Hold) -> bool:
        if self._exclusive:
            return False
        if hold.alone():
            return self.in_use == 0
        return self.in_use + min(hold.weight, self.capacity) <= self.capacity

    def _grant(self) -> None:
        while self._queue:
            hold = self._queue[0]
            if hold.granted.done():  # cancelled; its task withdraws it later
                self._queue.popleft()
                continue
            if not self._fits(hold):
                return
            self._queue.popleft()
            hold.exclusive = hold.alone()
            if hold.exclusive:
                self._exclusive = True
            else:
                hold.weight = min(hold.weight, self.capacity)
                self.in_use += hold.weight
            self._idle.clear()
            hold.granted.set_result(None)

    def _withdraw(self, hold: Hold) -> None:
        """A waiter gave up (cancelled); if it was granted meanwhile, give back."""
        if hold in self._queue:
            self._queue.remove(hold)
            self._grant()  # a big waiter leaving may let smaller ones in
        elif hold.granted.done() and not hold.granted.cancelled():
            self._release(hold)

    def _release(self, hold: Hold) -> None:
        if hold.exclusive:
            self._exclusive = False
        else:
            self.in_use -= hold.weight
        if not self.busy():
            self._idle.set()
        self._grant()

    async def drain(self, seconds: float) -> bool:
        """Close, then wait for the holders to finish; False if some still run."""
        self.closing = True
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
