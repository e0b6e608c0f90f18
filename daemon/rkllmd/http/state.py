"""The daemon's state over HTTP, for the web console and any other client.

``GET /v1/status`` is what ``rkllmctl status`` shows (the control protocol's
``status`` object) plus the workers' resident memory; ``GET /v1/catalog`` is
``rkllmctl list``'s rows (file, source repo, architecture, ...). ``GET /v1/events``
streams both as server-sent events, each sent again only when it changed, so a
page stays current without asking again and again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp import web

from ..manager import ModelManager
from ..rpc import render
from .routing import Route
from .services import services
from .sse import EventStream

# How often a stream looks at the manager's in-memory state (no I/O but /proc).
CHECK_SECONDS = 0.5
# A comment line this often keeps proxies and the browser from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


def rss_bytes(pid: int | None) -> int | None:
    """A worker's resident memory, from /proc (None when it cannot be read)."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def status_body(manager: ModelManager) -> dict[str, Any]:
    st = manager.status()
    body = render.status(st)
    body["worker_rss_bytes"] = rss_bytes(st.worker_pid)
    # Whether the resident model takes images (the console's chat offers an upload).
    body["vision"] = bool(st.resident and st.resident.props.vision)
    if body["embedding"] is not None:
        body["embedding"]["worker_rss_bytes"] = rss_bytes(body["embedding"]["worker_pid"])
    return body


async def status(request: web.Request) -> web.Response:
    return web.json_response(status_body(services(request).manager))


async def catalog(request: web.Request) -> web.Response:
    rows = [render.model(v) for v in services(request).manager.list_models()]
    return web.json_response({"object": "list", "data": rows})


def _changing(body: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a status is new: all but the clock and the memory figure."""
    return {k: v for k, v in body.items() if k not in ("uptime_s", "worker_rss_bytes")}


async def events(request: web.Request) -> web.StreamResponse:
    """``event: status`` and ``event: models``, first at once and then on change."""
    manager = services(request).manager
    stream = await EventStream.open(request)
    last_status: dict[str, Any] | None = None
    last_views: list[Any] | None = None
    quiet = 0.0
    while manager.accepting:  # a daemon shutting down ends the stream
        body = status_body(manager)
        if last_status is None or _changing(body) != last_status:
            last_status = _changing(body)
            await stream.send_event("status", body)
            quiet = 0.0
        views = manager.list_models()
        if last_views is None or not _same(views, last_views):
            last_views = views
            await stream.send_event("models", {"data": [render.model(v) for v in views]})
            quiet = 0.0
        if quiet >= KEEPALIVE_SECONDS:
            await stream.response.write(b": keep-alive\n\n")
            quiet = 0.0
        await asyncio.sleep(CHECK_SECONDS)
        quiet += CHECK_SECONDS
    await stream.done(marker=False)
    return stream.response


def _same(a: list[Any], b: list[Any]) -> bool:
    # The manager hands out the same frozen views until something changes.
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


ROUTES = (
    Route("GET", "/v1/status", status, "The daemon's state (rkllmctl status), worker memory"),
    Route("GET", "/v1/catalog", catalog, "Every model file with its metadata (rkllmctl list)"),
    Route("GET", "/v1/events", events, "SSE: status and models events, sent when they change"),
)
