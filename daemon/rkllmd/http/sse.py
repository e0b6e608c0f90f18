"""Server-sent events and NDJSON streams, plus pulling events with deadlines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from aiohttp import web

from .. import errors as e
from ..wirejson import dumps, dumps_line

T = TypeVar("T")

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}
NDJSON_HEADERS = {"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}


class EventStream:
    """One streamed response: SSE (``data: ...``) or NDJSON lines."""

    def __init__(self, response: web.StreamResponse, *, ndjson: bool = False) -> None:
        self._response = response
        self._ndjson = ndjson

    @classmethod
    async def open(
        cls, request: web.Request, *, ndjson: bool = False, headers: dict[str, str] | None = None
    ) -> EventStream:
        response = web.StreamResponse(
            headers={**(NDJSON_HEADERS if ndjson else SSE_HEADERS), **(headers or {})}
        )
        await response.prepare(request)
        return cls(response, ndjson=ndjson)

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    async def send(self, obj: Any) -> None:
        data = dumps_line(obj) if self._ndjson else b"data: " + dumps(obj) + b"\n\n"
        await self._response.write(data)

    async def send_event(self, name: str, obj: Any) -> None:
        """A named SSE event (``event:`` and ``data:``), as the Responses API streams."""
        await self._response.write(b"event: " + name.encode() + b"\ndata: " + dumps(obj) + b"\n\n")

    async def done(self, *, marker: bool = True) -> None:
        """End the stream; SSE streams end with ``data: [DONE]`` unless ``marker`` is False
        (TabbyAPI's load progress: its clients parse every event as JSON; the Responses
        API has no such line)."""
        if marker and not self._ndjson:
            await self._response.write(b"data: [DONE]\n\n")
        await self._response.write_eof()


def wants_stream(request: web.Request, stream: bool) -> bool:
    """Routes answering JSON or SSE alike: SSE when the body says ``stream: true`` or
    the client accepts ``text/event-stream`` (the Go TabbyAPI client's LoadStream
    sends the same body as Load, so only a header can tell them apart)."""
    return stream or "text/event-stream" in request.headers.get("Accept", "")


class Deadline:
    """First-event and whole-request limits for pulling from a generation."""

    def __init__(self, first_event: float, total: float) -> None:
        self._started = time.monotonic()
        self._first = first_event
        self._total = total
        self._seen_first = False

    def remaining(self) -> float | None:
        now = time.monotonic() - self._started
        limits = [] if self._seen_first else [self._first - now]
        if self._total > 0:
            limits.append(self._total - now)
        return min(limits) if limits else None

    async def next(self, events: AsyncIterator[T]) -> T:
        try:
            async with asyncio.timeout(self.remaining()):
                item = await anext(events)
        except TimeoutError:
            which = "the request time limit" if self._seen_first else "the first-token time limit"
            raise e.RequestTimeout(f"generation exceeded {which}") from None
        self._seen_first = True
        if getattr(item, "finish_reason", None) == "abort":
            # This client is still here, so the daemon stopped the run (shutdown or
            # unload): say so, rather than let a cut reply pass as a whole one.
            raise e.Aborted("generation stopped: the daemon is shutting down or unloading")
        return item
