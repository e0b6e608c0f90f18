"""The simple chat dialect of an LM Studio-style proxy (../shared/seeds/003_* is its
specification): /help, /models, /models/load, /models/unload, and /chat in three
flavours (generic, regular, vision), each whole or as an NDJSON stream, with a
camelCase ``config`` and images on the messages.

Errors keep the proxy's shapes, with the stable code next to them: service errors are
``{"detail": "...", "code": ...}`` (FastAPI's shape), a failed load is
``{"loaded": false, "error": "...", "code": ...}``, and an error after the first
streamed line is ``{"type": "error", "detail": ..., "code": ...}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from aiohttp import web
from pydantic import ConfigDict, Field, StrictBool

from ... import errors as e
from ...images import MIME_TYPES, ImageInput, decode_grouped
from ...requests import ChatMessage, GenerateRequest, Sampling
from ...wire import NUMBER
from ..edge import may_load_models, read_body
from ..errors import error_headers, http_status
from ..routing import Route
from ..schemas import Body, ModelName
from ..services import Services, services
from ..sse import EventStream
from ..streaming import Run, generation, streamed

SERVICE_DOWN = "Chat service unavailable: "
ONE_RESIDENT = "rkllmd keeps one model resident, so every load is exclusive"

# --- bodies --------------------------------------------------------------------------


class ImageIn(Body):
    # Base64 or a data: URL of JPEG, PNG or WebP bytes (images.py checks the bytes).
    data_base64: Annotated[str, Field(min_length=1)]
    mime_type: (
        Annotated[
            str, Field(max_length=100, json_schema_extra={"enum": [*MIME_TYPES, "image/jpg"]})
        ]
        | None
    ) = None


class SimpleMessage(Body):
    role: Annotated[str, Field(json_schema_extra={"enum": ["system", "user", "assistant"]})]
    content: Annotated[str, Field(max_length=4_194_304)] = ""
    images: Annotated[list[ImageIn], Field(max_length=256)] = []


class SimpleChatConfig(Body):
    temperature: Annotated[float, Field(ge=0.0, le=2.0), NUMBER] = 0.8
    maxTokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    topP: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] = 0.95
    presencePenalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0
    frequencyPenalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0


class SimpleChatRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
                {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            ]
        },
    )

    model_key: ModelName | None = None
    model: ModelName | None = None  # an older spelling of model_key
    messages: Annotated[list[SimpleMessage], Field(min_length=1, max_length=4096)] | None = None
    prompt: Annotated[str, Field(max_length=4_194_304)] | None = None
    config: SimpleChatConfig = SimpleChatConfig()

    def key(self) -> str | None:
        return self.model_key or self.model


class LoadRequest(Body):
    model_key: ModelName
    exclusive: StrictBool = True


class UnloadRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["model_key"], "properties": {"model_key": {"type": "string"}}},
                {"required": ["unload_all"], "properties": {"unload_all": {"const": True}}},
            ]
        },
    )

    model_key: ModelName | None = None
    unload_all: StrictBool = False


# --- error shapes ----------------------------------------------------------------------


def _detail(error: e.RkllmdError) -> dict[str, Any]:
    """FastAPI's ``{"detail"}``, with the stable code (and the error's facts) beside it."""
    service = not isinstance(error, e.InvalidParams)
    extra = {k: v for k, v in error.details.items() if k != "code"}
    return {
        "detail": (SERVICE_DOWN if service else "") + error.message,
        "code": error.code,
        **extra,
    }


def _as_response(error: e.RkllmdError, body: dict[str, Any]) -> web.Response:
    """The status and headers every dialect uses (Retry-After, x-should-retry), this body."""
    return web.json_response(body, status=http_status(error), headers=error_headers(error))


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _service_errors(handler: Handler) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except e.RkllmdError as error:
            return _as_response(error, _detail(error))

    return answer


# --- help and models -------------------------------------------------------------------


async def help_page(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "service": "rkllmd: the simple chat API of an LM Studio-style proxy",
            "routes": [
                {"method": "GET", "path": "/health", "description": "Health check"},
                *(
                    {"method": r.method, "path": r.path, "description": r.summary, **_example(r)}
                    for r in ROUTES
                ),
            ],
            "config": {
                "temperature": "float 0..2",
                "maxTokens": "int >= 1",
                "topP": "float 0..1",
                "presencePenalty": "float -2..2",
                "frequencyPenalty": "float -2..2",
            },
            "images": "messages[].images: [{data_base64, mime_type}], JPEG, PNG or WebP",
            "docs": "/docs",
        }
    )


def _example(route: Route) -> dict[str, Any]:
    example = EXAMPLES.get(route.path)
    return {"example": example} if example is not None else {}


def _model_entry(svc: Services) -> list[dict[str, Any]]:
    status = svc.manager.status()
    resident = status.resident if status.serving else None
    if resident is None:
        return []
    meta = resident.entry.meta
    return [
        {
            "model_key": resident.entry.id,
            "identifier": resident.entry.id,
            "display_name": meta.name or resident.entry.id,
            "type": meta.type or "chat",
            "format": resident.entry.format,
            "path": resident.entry.relpath,
            "context_length": resident.props.n_ctx,
            "max_context_length": meta.context_length or resident.props.n_ctx_train,
            "vision": resident.props.vision,
            "state": status.state.value,
        }
    ]


async def list_models(request: web.Request) -> web.Response:
    models = _model_entry(services(request))
    return web.json_response({"models": models, "count": len(models)})


async def load(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, LoadRequest, svc.config.current.http)
    before = svc.manager.status().resident
    try:
        status = await svc.manager.load(body.model_key)
    except e.RkllmdError as error:
        failed = {"loaded": False, "error": f"Failed to load model: {error.message}"}
        extra = {k: v for k, v in error.details.items() if k != "code"}
        return _as_response(
            error, {**failed, "code": error.code, "model_key": body.model_key, **extra}
        )
    model = status.model
    unloaded = [before.entry.id] if before is not None and before.entry.id != model else []
    note = ONE_RESIDENT + ("" if body.exclusive else "; exclusive=false cannot be honoured")
    return web.json_response(
        {"loaded": True, "model_key": model, "exclusive": True, "unloaded": unloaded, "note": note}
    )


async def unload(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, UnloadRequest, svc.config.current.http)
    if body.model_key is None and not body.unload_all:
        raise e.InvalidParams("give model_key, or unload_all: true", param="model_key")
    resident = svc.manager.status().model if svc.manager.status().resident else None
    wanted = svc.registry.resolve(body.model_key).id if body.model_key else resident
    if body.unload_all or (resident is not None and wanted == resident):
        await svc.manager.unload()
        unloaded = [resident] if resident else []
        return web.json_response({"unloaded": unloaded, "count": len(unloaded)})
    return web.json_response({"unloaded": [], "count": 0, "message": f"{wanted} is not loaded"})


# --- chat ------------------------------------------------------------------------------


# The camelCase config fields by their sampling names (sampler presets need to know
# which ones the request set).
GIVEN = {
    "maxTokens": "max_tokens",
    "temperature": "temperature",
    "topP": "top_p",
    "presencePenalty": "presence_penalty",
    "frequencyPenalty": "frequency_penalty",
}


def _generate_request(
    body: SimpleChatRequest, default_max: int, images: list[tuple[ImageInput, ...]]
) -> GenerateRequest:
    c = body.config
    sampling = Sampling(
        max_tokens=c.maxTokens or default_max,
        temperature=c.temperature,
        top_p=c.topP,
        presence_penalty=c.presencePenalty,
        frequency_penalty=c.frequencyPenalty,
        given=tuple(sorted(GIVEN[f] for f in c.model_fields_set if f in GIVEN)),
    )
    if body.messages:
        messages = tuple(
            ChatMessage(m.role, m.content, images=seen)
            for m, seen in zip(body.messages, images, strict=True)
        )
    elif body.prompt is not None:
        messages = (ChatMessage("user", body.prompt),)
    else:
        raise e.InvalidParams("either messages or prompt is required", param="messages")
    return GenerateRequest(messages=messages, sampling=sampling)


def _images(svc: Services, body: SimpleChatRequest) -> list[tuple[ImageInput, ...]]:
    sent = [[(i.data_base64, i.mime_type) for i in m.images] for m in body.messages or ()]
    return decode_grouped(sent, svc.config.current.vision)


def _model_for(svc: Services, body: SimpleChatRequest, default: str | None) -> str | None:
    """The request's model_key, else the route's default, else (None) the resident model."""
    name = body.key() or default
    if name is not None:
        svc.registry.resolve(name)  # an unknown key is a 404 before anything is queued
    return name


def _answer(run: Run, content: str) -> dict[str, Any]:
    return {
        "model": run.model_id,
        "content": content,
        "stop_reason": run.finish,
        "predicted_tokens": run.done.usage.completion_tokens,
    }


def _chat_route(default_model: Callable[[Services], str | None], stream: bool) -> Handler:
    async def chat(request: web.Request) -> web.StreamResponse:
        svc = services(request)
        config = svc.config.current
        body = await read_body(request, SimpleChatRequest, config.http)
        images = _images(svc, body)
        generate = _generate_request(body, config.generation.default_max_tokens, images)
        model = _model_for(svc, body, default_model(svc))
        may_load = may_load_models(request, config.http)
        async with generation(svc.manager, config.http, generate, model, may_load=may_load) as run:
            if not stream:
                return web.json_response(_answer(run, await run.text()))

            async def send_all(events: EventStream) -> None:
                async for text in run.texts():
                    await events.send({"type": "fragment", "content": text})
                done = {k: v for k, v in _answer(run, "").items() if k != "content"}
                await events.send({"type": "done", **done})

            return await streamed(
                request,
                send_all,
                ndjson=True,
                error_event=lambda x: {"type": "error", **_detail(x)},
            )

    return _service_errors(chat)


def _no_default(svc: Services) -> str | None:
    return None


def _regular(svc: Services) -> str | None:
    return svc.config.current.simplechat.default_regular_model


def _vision(svc: Services) -> str | None:
    return svc.config.current.simplechat.default_vision_model


EXAMPLES: dict[str, Any] = {
    "/models/load": {"model_key": "qwen/qwen3-4b-2507", "exclusive": True},
    "/models/unload": {"model_key": "qwen/qwen3-4b-2507"},
    "/chat": {"model_key": "my-custom-model", "messages": [{"role": "user", "content": "Hello!"}]},
    "/chat/regular": {
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is 2+2?"},
        ],
        "config": {"temperature": 0.7, "maxTokens": 100},
    },
    "/chat/vision": {
        "messages": [
            {
                "role": "user",
                "content": "What is in this image?",
                "images": [{"data_base64": "<BASE64_ENCODED_IMAGE>", "mime_type": "image/jpeg"}],
            }
        ],
        "config": {"temperature": 0.6, "maxTokens": 200},
    },
}


def _chat_routes(
    path: str, default: Callable[[Services], str | None], what: str
) -> tuple[Route, ...]:
    return (
        Route("POST", path, _chat_route(default, False), f"Simple chat: {what}", SimpleChatRequest),
        Route(
            "POST",
            f"{path}/stream",
            _chat_route(default, True),
            f"Simple chat: {what}, NDJSON fragments",
            SimpleChatRequest,
        ),
    )


ROUTES: tuple[Route, ...] = (
    Route("GET", "/help", help_page, "Simple chat: this API's routes with examples"),
    Route("GET", "/models", _service_errors(list_models), "Simple chat: the loaded model"),
    Route(
        "POST",
        "/models/load",
        _service_errors(load),
        "Simple chat: load a model (every load is exclusive)",
        LoadRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/models/unload",
        _service_errors(unload),
        "Simple chat: unload the model (model_key or unload_all)",
        UnloadRequest,
        admin=True,
    ),
    *_chat_routes("/chat", _no_default, "the model_key's model (else the resident one)"),
    *_chat_routes("/chat/regular", _regular, "simplechat.default_regular_model"),
    *_chat_routes("/chat/vision", _vision, "simplechat.default_vision_model"),
)
