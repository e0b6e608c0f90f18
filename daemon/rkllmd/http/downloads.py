"""Pulling models over HTTP: TabbyAPI's /v1/download and an SSE progress variant.

Both are management routes (admin key when one is set). A client that goes away
detaches from the pull; the last one to leave cancels it, and what was fetched
stays in staging so the next pull resumes.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import errors as e
from ..downloads import ModelStore, PullRequest
from ..jobs import TERMINAL
from . import schemas as s
from .edge import read_body
from .services import services
from .sse import EventStream
from .streaming import streamed


async def _request(request: web.Request) -> tuple[ModelStore, PullRequest]:
    svc = services(request)
    if svc.store is None:
        raise e.NotAvailable("pulling models is not available in this daemon")
    body = await read_body(request, s.DownloadRequest, svc.config().http)
    if not body.repository():
        raise e.InvalidParams("repo_id is required", param="repo_id")
    pull = PullRequest(
        repo=body.repository(),
        file=body.file,
        include=tuple(body.include),
        exclude=tuple(body.exclude),
        revision=body.revision,
        token=body.token,
    )
    return svc.store, pull.checked()  # a bad repo id or pattern fails before anything starts


async def download(request: web.Request) -> web.Response:
    """TabbyAPI shape: wait for the pull, answer ``{"download_path": ...}``."""
    store, pull = await _request(request)
    async with store.pull(pull) as job:
        result: dict[str, Any] = await job.result()
    return web.json_response({"download_path": result.get("folder"), "result": result})


async def download_stream(request: web.Request) -> web.StreamResponse:
    """Progress as SSE events (bytes, rate, ETA per file and overall), then the result."""
    store, pull = await _request(request)
    async with store.pull(pull) as job:

        async def send_all(stream: EventStream) -> None:
            async for event in job.events():
                if event["stage"] not in TERMINAL:
                    await stream.send(event)
            await stream.send({"stage": "done", "result": await job.result()})

        return await streamed(request, send_all)
