"""TabbyAPI's model routes: /v1/model, /v1/model/list|load (SSE progress)|unload|props,
/v1/model/embedding/*.

The models service of TabbyAPI's Go client (../shared/seeds/001_*) is the
specification these answer to.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field

from ... import errors as e
from ...manager import ModelManager
from ...props import ModelProps
from ...requests import LoadOptions
from ...views import ModelView, Status
from ...wire import NUMBER
from ..cards import model_card
from ..edge import Access, key_access, read_body
from ..routing import Route
from ..schemas import Body, ModelName
from ..services import services
from ..sse import EventStream
from ..streaming import streamed


class TabbyLoadRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["model_name"], "properties": {"model_name": {"type": "string"}}},
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
            ]
        },
    )

    model_name: ModelName | None = None
    name: ModelName | None = None
    max_seq_len: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    prompt_template: Annotated[str, Field(max_length=65_536)] | None = None

    def model(self) -> str | None:
        return self.model_name or self.name


def _card(view: ModelView, props: ModelProps | None) -> dict[str, Any]:
    card = model_card(view, props)
    card["parameters"] = {
        "max_seq_len": props.n_ctx if props else card["contextLength"],
        "prompt_template": props.chat_template_source if props else None,
        "prompt_template_content": props.chat_template if props else None,
        "cache_size": props.n_ctx if props else None,
        "format": view.entry.format,
    }
    return card


def _resident(manager: ModelManager) -> tuple[Status, ModelView, ModelProps]:
    """The status, the loaded model and its props; NoModelLoaded when none is."""
    status = manager.status()
    if not status.serving or status.resident is None:
        raise e.NoModelLoaded("no model is loaded")
    resident = status.resident
    return status, ModelView(resident.entry, True, resident.props), resident.props


async def current(request: web.Request) -> web.Response:
    _, view, props = _resident(services(request).manager)
    return web.json_response(_card(view, props))


async def list_models(request: web.Request) -> web.Response:
    views = services(request).manager.list_models()
    return web.json_response({"object": "list", "data": [_card(v, None) for v in views]})


async def props(request: web.Request) -> web.Response:
    status, _, props = _resident(services(request).manager)
    return web.json_response(
        {
            "model": status.model,
            "chat_template": props.chat_template,
            "n_ctx": props.n_ctx,
            "total_slots": props.slots,
            "queue": {"waiting": status.queue.waiting, "max": status.queue.max},
            "props": props.to_dict(),
        }
    )


async def load(request: web.Request) -> web.StreamResponse:
    """Load with progress as SSE, in TabbyAPI's ModelLoadResponse shape."""
    svc = services(request)
    body = await read_body(request, TabbyLoadRequest, svc.config.current.http)
    name = body.model()
    if not name:
        raise e.InvalidParams("model_name is required", param="model_name")
    svc.registry.resolve(name)  # unknown names fail as a plain HTTP error
    options = LoadOptions(ctx_size=body.max_seq_len, chat_template=body.prompt_template)
    updates: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()  # None: load ended

    async def progress(stage: str, fraction: float | None, message: str) -> None:
        status = "finished" if stage == "ready" else "processing"
        updates.put_nowait(
            {
                "model_type": "model",
                "module": round((fraction or 0) * 100),
                "modules": 100,
                "status": status,
                "stage": stage,
                "message": message,
            }
        )

    async def send_all(stream: EventStream) -> None:
        loading = asyncio.create_task(svc.manager.load(name, options, progress))
        loading.add_done_callback(lambda _: updates.put_nowait(None))
        while (update := await updates.get()) is not None:
            await stream.send(update)
        loading.result()

    return await streamed(request, send_all)


async def unload(request: web.Request) -> web.Response:
    await services(request).manager.unload()
    return web.json_response({})


async def embedding_list(request: web.Request) -> web.Response:
    views = [
        v
        for v in services(request).manager.list_models()
        if (v.entry.meta.type or "chat") in ("embedding", "chat")
    ]
    return web.json_response({"object": "list", "data": [_card(v, None) for v in views]})


async def permission(request: web.Request) -> web.Response:
    """Which key the request carries: ``admin`` or ``api`` (the edge refused no key)."""
    access = key_access(request, services(request).config.current.http)
    return web.json_response({"permission": "admin" if access is Access.ADMIN else "api"})


ROUTES = (
    Route("GET", "/v1/auth/permission", permission, "TabbyAPI: the permission of the key"),
    Route("GET", "/v1/model", current, "TabbyAPI: the loaded model's card"),
    Route("GET", "/v1/model/list", list_models, "TabbyAPI: model cards"),
    Route("GET", "/v1/model/props", props, "Loaded model properties: template, context, slots"),
    Route(
        "POST",
        "/v1/model/load",
        load,
        "TabbyAPI: load with SSE progress",
        TabbyLoadRequest,
        admin=True,
    ),
    Route("POST", "/v1/model/unload", unload, "TabbyAPI: unload", admin=True),
    Route("GET", "/v1/model/embedding/list", embedding_list, "TabbyAPI: embedding-capable models"),
    Route(
        "POST",
        "/v1/model/embedding/load",
        load,
        "TabbyAPI: load an embedding model",
        TabbyLoadRequest,
        admin=True,
    ),
    Route("POST", "/v1/model/embedding/unload", unload, "TabbyAPI: unload", admin=True),
)
