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
from ..manager import ModelManager
from . import schemas as s
from .edge import read_body
from .openai import model_card
from .services import services
from .sse import EventStream
from .streaming import generation, streamed

MIB = 1024 * 1024
LOADED = ("ready", "generating")


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
    loaded = status["state"] in LOADED
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


def _resident(manager: ModelManager) -> tuple[dict[str, Any], dict[str, Any]]:
    """The status and the ``show`` of the loaded model; NoModelLoaded when none is."""
    status = manager.status()
    if status["state"] not in LOADED:
        raise e.NoModelLoaded("no model is loaded")
    return status, manager.show(status["model"])


async def tabby_current(request: web.Request) -> web.Response:
    _, shown = _resident(services(request).manager)
    return web.json_response(_tabby_card(shown, shown["props"]))


async def tabby_list(request: web.Request) -> web.Response:
    models = services(request).manager.list_models()
    return web.json_response({"object": "list", "data": [_tabby_card(m, None) for m in models]})


async def tabby_props(request: web.Request) -> web.Response:
    status, shown = _resident(services(request).manager)
    props = shown["props"]
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

    async def send_all(stream: EventStream) -> None:
        load = asyncio.create_task(svc.manager.load(name, options, progress))
        load.add_done_callback(lambda _: updates.put_nowait(None))
        while (update := await updates.get()) is not None:
            await stream.send(update)
        load.result()

    return await streamed(request, send_all)


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
    async with generation(svc.manager, config.http, generate, body.model) as run:
        if not request.path.endswith("/stream"):
            content = await run.text()
            return web.json_response(
                {
                    "model": run.model_id,
                    "content": content,
                    "stop_reason": run.finish,
                    "predicted_tokens": run.done.usage["completion_tokens"],
                }
            )

        async def send_all(stream: EventStream) -> None:
            async for text in run.texts():
                await stream.send({"type": "fragment", "content": text})
            await stream.send(
                {
                    "type": "done",
                    "model": run.model_id,
                    "stop_reason": run.finish,
                    "predicted_tokens": run.done.usage["completion_tokens"],
                }
            )

        return await streamed(request, send_all, ndjson=True)
