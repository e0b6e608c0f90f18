"""Management and chat dialects of the peers our users come from.

RockchipLlama: /v1/models/available|load|unload|loaded
TabbyAPI:      /v1/model, /v1/model/list|load (SSE progress)|unload|props,
               /v1/model/embedding/*
Simple chat:   /chat and /chat/stream (NDJSON), camelCase ``config``
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .. import errors as e
from ..backends.base import ChatMessage, GenerateRequest, LoadOptions
from ..backends.base import Sampling as DomainSampling
from ..worker.proxy import TokenEvent
from . import schemas as s
from .edge import read_body
from .errors import error_body
from .openai import FINISH, model_card
from .services import services
from .sse import Deadline, EventStream

MIB = 1024 * 1024


# --- RockchipLlama -------------------------------------------------------------------


async def rk_available(request: web.Request) -> web.Response:
    models = services(request).manager.list_models()
    listed = [
        {
            "name": m["id"],
            "size_mb": round(m["size_bytes"] / MIB, 2),
            "loaded": m["loaded"],
            "format": m["format"],
        }
        for m in models
    ]
    loaded = next((m["id"] for m in models if m["loaded"]), None)
    return web.json_response({"models": listed, "total": len(listed), "loaded_model": loaded})


def _rk_notes(body: s.RockchipLoadRequest, fmt: str) -> list[str]:
    """Say which requested parameters cannot apply instead of dropping them."""
    if body.num_npu_core is None:
        return []
    if fmt == "gguf":
        return ["num_npu_core does not apply: GGUF models run on the CPU"]
    return [
        "num_npu_core is fixed when the model is converted to .rkllm; "
        "the requested value was not applied"
    ]


async def rk_load(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, s.RockchipLoadRequest, svc.config().http)
    entry = svc.registry.resolve(body.model)
    status = await svc.manager.load(
        body.model, LoadOptions(ctx_size=body.max_context_len), pin=body.pin
    )
    return web.json_response(
        {
            "success": True,
            "message": f"Model {status['model']} loaded successfully",
            "model_name": status["model"],
            "loaded": True,
            "notes": _rk_notes(body, entry.format),
        }
    )


async def rk_unload(request: web.Request) -> web.Response:
    status = services(request).manager.status()
    await services(request).manager.unload()
    name = status["model"]
    return web.json_response(
        {"success": True, "message": f"Model {name} unloaded" if name else "No model was loaded"}
    )


async def rk_loaded(request: web.Request) -> web.Response:
    status = services(request).manager.status()
    loaded = status["state"] in ("ready", "generating")
    return web.json_response(
        {
            "loaded": loaded,
            "model_name": status["model"] if loaded else None,
            "state": status["state"],
        }
    )


# --- TabbyAPI ------------------------------------------------------------------------


def _tabby_card(entry: dict[str, Any], props: dict[str, Any] | None) -> dict[str, Any]:
    card = model_card(entry, props)
    props = props or {}
    card["parameters"] = {
        "max_seq_len": props.get("n_ctx") or card["contextLength"],
        "prompt_template": props.get("chat_template_source"),
        "prompt_template_content": props.get("chat_template"),
        "cache_size": props.get("n_ctx"),
        "format": entry["format"],
    }
    return card


async def tabby_current(request: web.Request) -> web.Response:
    manager = services(request).manager
    status = manager.status()
    if status["state"] not in ("ready", "generating"):
        raise e.NoModelLoaded("no model is loaded")
    shown = manager.show(status["model"])
    return web.json_response(_tabby_card(shown, shown["props"]))


async def tabby_list(request: web.Request) -> web.Response:
    models = services(request).manager.list_models()
    return web.json_response({"object": "list", "data": [_tabby_card(m, None) for m in models]})


async def tabby_props(request: web.Request) -> web.Response:
    manager = services(request).manager
    status = manager.status()
    if status["state"] not in ("ready", "generating"):
        raise e.NoModelLoaded("no model is loaded")
    props = manager.show(status["model"])["props"]
    return web.json_response(
        {
            "model": status["model"],
            "chat_template": props.get("chat_template"),
            "n_ctx": props.get("n_ctx"),
            "total_slots": 1,
            "queue": status["queue"],
            "props": props,
        }
    )


async def tabby_load(request: web.Request) -> web.StreamResponse:
    """Load with progress as SSE, in TabbyAPI's ModelLoadResponse shape."""
    svc = services(request)
    body = await read_body(request, s.TabbyLoadRequest, svc.config().http)
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

    stream = await EventStream.open(request)
    load = asyncio.create_task(svc.manager.load(name, options, progress))
    load.add_done_callback(lambda _: updates.put_nowait(None))
    try:
        while (update := await updates.get()) is not None:
            await stream.send(update)
        load.result()
    except e.RkllmdError as exc:
        await stream.send(error_body(exc))
    await stream.done()
    return stream.response


async def tabby_unload(request: web.Request) -> web.Response:
    await services(request).manager.unload()
    return web.json_response({})


async def embedding_list(request: web.Request) -> web.Response:
    models = [
        m
        for m in services(request).manager.list_models()
        if (m.get("metadata") or {}).get("type", "chat") in ("embedding", "chat")
    ]
    return web.json_response({"object": "list", "data": [_tabby_card(m, None) for m in models]})


# --- simple chat dialect -------------------------------------------------------------


def _simple_request(body: s.SimpleChatRequest, default_max: int) -> GenerateRequest:
    c = body.config
    sampling = DomainSampling(
        max_tokens=c.maxTokens or default_max,
        temperature=c.temperature,
        top_p=c.topP,
        presence_penalty=c.presencePenalty,
        frequency_penalty=c.frequencyPenalty,
    )
    if body.messages:
        messages = tuple(ChatMessage(m.role, m.text()) for m in body.messages)
    elif body.prompt is not None:
        messages = (ChatMessage("user", body.prompt),)
    else:
        raise e.InvalidParams("either messages or prompt is required", param="messages")
    return GenerateRequest(messages=messages, sampling=sampling)


async def simple_chat(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config()
    body = await read_body(request, s.SimpleChatRequest, config.http)
    generate = _simple_request(body, config.generation.default_max_tokens)
    deadline = Deadline(
        config.http.first_token_timeout_seconds, config.http.request_timeout_seconds
    )
    streaming = request.path.endswith("/stream")
    async with svc.manager.generation(generate, body.model) as gen:
        event = await deadline.next(gen.events)
        if not streaming:
            pieces = []
            while isinstance(event, TokenEvent):
                pieces.append(event.text)
                event = await deadline.next(gen.events)
            return web.json_response(
                {
                    "model": gen.model_id,
                    "content": "".join(pieces),
                    "stop_reason": FINISH[event.finish_reason],
                    "predicted_tokens": event.usage["completion_tokens"],
                }
            )
        stream = await EventStream.open(request, ndjson=True)
        try:
            while isinstance(event, TokenEvent):
                await stream.send({"type": "fragment", "content": event.text})
                event = await deadline.next(gen.events)
            await stream.send(
                {
                    "type": "done",
                    "model": gen.model_id,
                    "stop_reason": FINISH[event.finish_reason],
                    "predicted_tokens": event.usage["completion_tokens"],
                }
            )
        except e.RkllmdError as exc:
            await stream.send({"type": "error", **error_body(exc)})
        await stream.done()
        return stream.response
