"""TabbyAPI's model routes, in both route families over the same handlers.

TabbyAPI's own paths (``/v1/model``, ``/v1/model/list|load|unload``, ``/props``,
``/v1/model/draft/list``) and the paths of its Go client's models service
(``/v1/models/current|props|draft``, ``POST /v1/models/load``, ``DELETE
/v1/models/current``); ../shared/seeds/001_* is the specification.

``POST /v1/model/load`` streams progress as SSE, as TabbyAPI does. ``POST
/v1/models/load`` answers one JSON object unless the client accepts
``text/event-stream`` or sends ``stream: true``: the Go client sends the same
request for Load (JSON) and LoadStream (SSE), so its LoadStream only streams when
told so by a header it does not send (see docs/http-api.md). The same path takes
RockchipLlama's load body (``model``); ``model_name`` picks TabbyAPI's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import RootModel

from .... import errors as e
from ....untrusted import load_json as parse_json
from ....views import ModelView, Resident
from ...edge import Access, key_access, read_body
from ...routing import Route
from ...services import Services, services
from ...sse import EventStream, wants_stream
from ...streaming import streamed
from .. import rockchip
from . import shapes
from .loading import TabbyLoadRequest, plan_load


def resident_of(svc: Services) -> Resident:
    """The loaded model; ``no_model_loaded`` (400) when there is none, as TabbyAPI."""
    status = svc.manager.status()
    if not status.serving or status.resident is None:
        raise e.NoModelLoaded("no model is loaded")
    return status.resident


def is_admin(request: web.Request) -> bool:
    """TabbyAPI lists everything to the admin key only; an API key sees what is loaded."""
    return key_access(request, services(request).config.current.http) is Access.ADMIN


def _servable(views: list[ModelView]) -> list[ModelView]:
    """Every model but drafts (they have their own list)."""
    return [v for v in views if not _is_draft(v)]


def _is_draft(view: ModelView) -> bool:
    return view.entry.meta.type == "draft" or view.entry.relpath.startswith("draft/")


def draft_of(svc: Services, resident: Resident) -> str | None:
    """The draft model the resident model decodes with: the load's, else the one
    ``[llamacpp] draft_model`` configures (when the backend took it)."""
    if resident.options.draft_model:
        return resident.options.draft_model
    if resident.props.details.get("speculative") == "draft_model":
        return svc.config.current.llamacpp.draft_model
    return None


async def current(request: web.Request) -> web.Response:
    svc = services(request)
    resident = resident_of(svc)
    return web.json_response(shapes.resident_card(resident, draft_of(svc, resident)))


async def list_models(request: web.Request) -> web.Response:
    views = services(request).manager.list_models()
    if not is_admin(request):
        views = [v for v in views if v.loaded]
    return web.json_response(shapes.model_list([shapes.card(v) for v in _servable(views)]))


async def list_drafts(request: web.Request) -> web.Response:
    """Draft models: the ``draft/`` folder of the models dir, or sidecar type ``draft``
    (any GGUF with the model's vocabulary drafts, wherever it is)."""
    svc = services(request)
    if is_admin(request):
        drafts = [v for v in svc.manager.list_models() if _is_draft(v)]
        return web.json_response(shapes.model_list([shapes.card(v) for v in drafts]))
    # An API key sees the draft in use, as TabbyAPI shows it: the id alone.
    status = svc.manager.status()
    draft = draft_of(svc, status.resident) if status.serving and status.resident else None
    cards = [shapes.bare_card(draft)] if draft else []
    return web.json_response(shapes.model_list(cards))


async def props(request: web.Request) -> web.Response:
    svc = services(request)
    status = svc.manager.status()
    resident = resident_of(svc)
    queue = {"waiting": status.queue.waiting, "max": status.queue.max}
    embedding = status.embedding.entry.id if status.embedding else None
    return web.json_response(shapes.props_answer(resident, queue, embedding))


async def _load_plan(request: web.Request) -> tuple[Services, str, Any, list[str]]:
    svc = services(request)
    body = await read_body(request, TabbyLoadRequest, svc.config.current.http)
    name = body.model()
    if not name:
        raise e.InvalidParams("model_name is required", param="model_name")
    entry = svc.registry.resolve(name)  # an unknown name fails before any stream starts
    options, notes = await plan_load(body, entry, svc.config.current, svc.registry)
    return svc, entry.id, options, notes


async def load_stream(request: web.Request) -> web.StreamResponse:
    """Progress as SSE events in TabbyAPI's ModelLoadResponse shape, ending with the
    ``finished`` one (no ``[DONE]``: TabbyAPI's clients parse every event as JSON)."""
    svc, name, options, notes = await _load_plan(request)
    updates: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: load ended

    async def progress(stage: str, fraction: float | None, message: str) -> None:
        status = "finished" if stage == "ready" else "processing"
        extra: dict[str, Any] = {"stage": stage, "message": message}
        if status == "finished":
            extra["notes"] = notes
        updates.put_nowait(shapes.load_progress(status, round((fraction or 0) * 100), 100, **extra))

    async def send_all(stream: EventStream) -> None:
        loading = asyncio.create_task(svc.manager.load(name, options, progress))
        loading.add_done_callback(lambda _: updates.put_nowait(None))
        while (update := await updates.get()) is not None:
            await stream.send(update)
        loading.result()

    return await streamed(request, send_all, done_marker=False)


async def load_json(request: web.Request) -> web.Response:
    svc, name, options, notes = await _load_plan(request)
    status = await svc.manager.load(name, options)
    return web.json_response(
        shapes.load_progress("finished", 1, 1, model=status.model, notes=notes)
    )


async def load(request: web.Request) -> web.StreamResponse:
    """The Go client's path: JSON by default, SSE when asked for."""
    try:
        stream = parse_json(await request.read() or b"{}").get("stream") is True
    except (ValueError, UnicodeDecodeError, AttributeError):
        stream = False  # read_body reports the body's problem
    if wants_stream(request, stream):
        return await load_stream(request)
    return await load_json(request)


class ModelsLoadRequest(RootModel[TabbyLoadRequest | rockchip.RockchipLoadRequest]):
    """``POST /v1/models/load`` takes TabbyAPI's body (``model_name``) or
    RockchipLlama's (``model``)."""


async def shared_load(request: web.Request) -> web.StreamResponse:
    """One path, two dialects: a body naming ``model_name`` (or ``name``) without
    ``model`` is TabbyAPI's Go client, anything else RockchipLlama's."""
    try:
        data = parse_json(await request.read() or b"{}")  # no nesting beyond 64 levels
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and "model" not in data and ("model_name" in data or "name" in data):
        return await load(request)
    return await rockchip.load(request)


async def unload(request: web.Request) -> web.Response:
    await services(request).manager.unload()
    return web.json_response({})


ROUTES = (
    Route("GET", "/v1/model", current, "TabbyAPI: the loaded model's card"),
    Route("GET", "/v1/models/current", current, "TabbyAPI (Go client): the loaded model"),
    Route("GET", "/v1/model/list", list_models, "TabbyAPI: model cards (admin: all)"),
    Route("GET", "/props", props, "TabbyAPI: slots, chat template, context"),
    Route("GET", "/v1/model/props", props, "TabbyAPI: slots, chat template, context"),
    Route("GET", "/v1/models/props", props, "TabbyAPI (Go client): model properties"),
    Route("GET", "/v1/model/draft/list", list_drafts, "TabbyAPI: draft models"),
    Route("GET", "/v1/models/draft", list_drafts, "TabbyAPI (Go client): draft models"),
    Route(
        "POST",
        "/v1/model/load",
        load_stream,
        "TabbyAPI: load with SSE progress",
        TabbyLoadRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/models/load",
        shared_load,
        "Load: TabbyAPI's Go client (model_name; JSON, or SSE on Accept: text/event-stream "
        "or stream: true) or RockchipLlama (model)",
        ModelsLoadRequest,
        admin=True,
    ),
    Route("POST", "/v1/model/unload", unload, "TabbyAPI: unload", admin=True),
    Route("DELETE", "/v1/models/current", unload, "TabbyAPI (Go client): unload", admin=True),
)
