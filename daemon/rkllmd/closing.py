"""Closing a generation's event stream to the end, whatever cancels its consumer.

Closing the stream aborts the generation in the worker and waits until the worker
says it stopped; the bookkeeping after it (slots, state, counters) must run too. A
client that hangs up can cancel its handler twice (the disconnect, then the
handler's own teardown); an ``await stream.aclose()`` hit by the second cancel
stops half-way and leaves the daemon counting a generation that has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any


async def aclose_fully(stream: AsyncGenerator[Any, None]) -> None:
    """``stream.aclose()`` run to its end even if we are cancelled meanwhile; a
    cancel that arrived is raised again once the stream is closed."""
    closing = asyncio.ensure_future(stream.aclose())
    cancelled = False
    while True:
        try:
            await asyncio.shield(closing)
        except asyncio.CancelledError:
            if closing.done():  # the close itself was cancelled: nothing left to wait for
                raise
            cancelled = True
            continue
        break
    if cancelled:
        raise asyncio.CancelledError
