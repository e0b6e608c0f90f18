"""Pulling models over HTTP: TabbyAPI's /v1/download, and /v1/models/download (its Go
client's path) with SSE progress for a client that asks for it.

Both are management routes (admin key when one is set). A client that goes away
detaches from the pull; the last one to leave cancels it, and what was fetched
stays in staging so the next pull resumes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field, StrictBool

from .. import errors as e
from ..store import ModelStore, PullRequest
from ..store.job import TERMINAL
from .edge import read_body
from .routing import Route
from .schemas import (
    GLOB_PATTERN,
    REPO_FILE_PATTERN,
    REPO_ID_PATTERN,
    REVISION_PATTERN,
    Body,
    documented,
)
from .services import services
from .sse import EventStream, wants_stream
from .streaming import streamed

RepoId = Annotated[str, documented(REPO_ID_PATTERN, 200, 3)]
Glob = Annotated[str, documented(GLOB_PATTERN, 255)]


class HubPullRequest(Body):
    """TabbyAPI's download body; ``repo`` is accepted as an alias of ``repo_id``."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["repo_id"], "properties": {"repo_id": {"type": "string"}}},
                {"required": ["repo"], "properties": {"repo": {"type": "string"}}},
            ]
        },
    )

    repo_id: RepoId | None = None
    repo: RepoId | None = None
    file: Annotated[str, documented(REPO_FILE_PATTERN, 255)] | None = None
    revision: Annotated[str, documented(REVISION_PATTERN, 255)] | None = None
    repo_type: Literal["model"] = "model"
    include: Annotated[list[Glob], Field(max_length=64)] = []
    exclude: Annotated[list[Glob], Field(max_length=64)] = []
    # Goes into an HTTP header: printable ASCII only (anything else broke the request).
    token: Annotated[str, Field(max_length=1024, pattern=r"^[\x21-\x7e]*$")] | None = None
    folder_name: None = Field(None, description="not supported: pulls go to <owner>/<repo>")
    # /v1/models/download: SSE progress instead of one JSON answer.
    stream: StrictBool = False

    def repository(self) -> str:
        return self.repo_id or self.repo or ""


async def _request(request: web.Request) -> tuple[ModelStore, PullRequest, bool]:
    svc = services(request)
    if svc.store is None:
        raise e.NotAvailable("pulling models is not available in this daemon")
    body = await read_body(request, HubPullRequest, svc.config.current.http)
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
    # A bad repo id or pattern fails before anything starts.
    return svc.store, pull.checked(), wants_stream(request, body.stream)


async def pull(request: web.Request) -> web.Response:
    """TabbyAPI shape: wait for the pull, answer ``{"download_path": ...}``."""
    store, pull, _ = await _request(request)
    return await _pull_json(store, pull)


async def _pull_json(store: ModelStore, pull: PullRequest) -> web.Response:
    async with store.pull(pull) as job:
        result: dict[str, Any] = await job.result()
    return web.json_response({"download_path": result.get("folder"), "result": result})


async def pull_stream(request: web.Request) -> web.StreamResponse:
    """Progress as SSE events (bytes, rate, ETA per file and overall), then the result,
    for a client that accepts ``text/event-stream`` or sends ``stream: true``; else
    TabbyAPI's JSON answer (its Go client's Download decodes ``download_path``)."""
    store, pull, sse = await _request(request)
    if not sse:
        return await _pull_json(store, pull)
    async with store.pull(pull) as job:

        async def send_all(stream: EventStream) -> None:
            async for event in job.events():
                if event["stage"] not in TERMINAL:
                    await stream.send(event)
            await stream.send({"stage": "done", "result": await job.result()})

        return await streamed(request, send_all)


ROUTES = (
    Route(
        "POST",
        "/v1/models/download",
        pull_stream,
        "Pull a model from the Hub: JSON, or SSE progress (Accept: text/event-stream)",
        HubPullRequest,
        admin=True,
    ),
    Route(
        "POST", "/v1/download", pull, "TabbyAPI: pull a model from the Hub", HubPullRequest, True
    ),
)
