"""Ollama's generation routes: /api/chat, /api/generate, /api/embed, /api/embeddings.

Streams are NDJSON by default (``"stream": false`` for one object); the last object
carries ``done``, ``done_reason`` and the timings in nanoseconds, measured by the
daemon. ``options`` map to our sampling (the rest of Ollama's options are ignored);
``num_ctx`` reloads the model with that context when it differs, clamped to what the
model supports. ``format`` ("json" or a JSON Schema) is a structured reply;
``keep_alive`` replaces the idle time for the model (0 unloads it after the request,
a negative value keeps it). A chat without messages, or a generate without a prompt,
only loads the model (or, with ``keep_alive`` 0, unloads it).
"""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool

from ... import errors as e
from ... import structured
from ...chat.parse import Delta
from ...chat.turn import ChatReply
from ...requests import ChatMessage, GenerateRequest, ImageInput
from ...wire import NUMBER, EmbedInput
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body
from ..services import services
from ..sse import EventStream
from ..streaming import Run, streamed
from ..structured import reply_run
from .ollama_models import Name, ollama_error
from .ollama_options import (
    Generation,
    KeepAlive,
    Options,
    keep_alive_seconds,
    load_only,
    now,
    ns,
    ollama_images,
    prepare,
    reply_format,
    sampling_of,
    thinking,
    timings,
)
from .openai_embeddings import shortened


class OllamaMessage(Body):
    role: Literal["system", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=4_194_304)] | None = None
    thinking: str | None = None
    images: Annotated[list[str], Field(max_length=64)] | None = None
    tool_calls: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_name: str | None = None

    def to_message(self, images: tuple[ImageInput, ...] = ()) -> ChatMessage:
        calls = tuple(_openai_call(call, i) for i, call in enumerate(self.tool_calls or ()))
        return ChatMessage(self.role, self.content or "", calls, images=images)


class ChatBody(Generation):
    messages: Annotated[list[OllamaMessage], Field(max_length=4096)] = []
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None


class GenerateBody(Generation):
    prompt: Annotated[str, Field(max_length=4_194_304)] | None = None
    suffix: Annotated[str, Field(max_length=4_194_304)] | None = None
    system: Annotated[str, Field(max_length=4_194_304)] | None = None
    template: str | None = None
    raw: StrictBool | None = None
    images: Annotated[list[str], Field(max_length=64)] | None = None
    context: list[Any] | None = None  # deprecated in Ollama; ignored


class EmbedBody(Body):
    model: Name
    input: EmbedInput
    truncate: StrictBool | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None
    dimensions: Annotated[int, Field(ge=1, le=65_536), NUMBER] | None = None


class EmbeddingsBody(Body):
    model: Name
    prompt: Annotated[str, Field(max_length=1_048_576)] | None = None
    options: Options | None = None
    keep_alive: KeepAlive = None


def _openai_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    """An Ollama tool call (arguments an object) in OpenAI's shape (arguments JSON text)."""
    raw = call.get("function")
    function: dict[str, Any] = raw if isinstance(raw, dict) else {}
    args = function.get("arguments", {})
    return {
        "id": str(call.get("id") or f"call_{index}"),
        "type": "function",
        "function": {
            "name": str(function.get("name") or ""),
            "arguments": args if isinstance(args, str) else json.dumps(args, ensure_ascii=False),
        },
    }


# --- chat ----------------------------------------------------------------------------


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    svc = services(request)
    config = svc.config.current
    body = await read_body(request, ChatBody, config.http)
    may_load = may_load_models(request, config.http)
    model = await prepare(svc, body, may_load)
    keep_alive = keep_alive_seconds(body.keep_alive, may_load)
    images = ollama_images(svc, [m.images or () for m in body.messages])
    if not body.messages:
        return await load_only(svc, model, keep_alive, may_load, "message", _message(""))
    tools = structured.tool_choice(body.tools, None, None)
    generate = GenerateRequest(
        messages=tuple(m.to_message(i) for m, i in zip(body.messages, images, strict=True)),
        sampling=sampling_of(body, config.generation.default_max_tokens),
        tools=tools.tools,
        enable_thinking=thinking(body.think),
    )
    stream = body.stream is not False
    constraint = reply_format(body.format)
    async with reply_run(
        svc, generate, model, constraint, stream=stream, may_load=may_load, keep_alive=keep_alive
    ) as run:
        props = svc.manager.resident_props()
        reply = ChatReply(
            tools=bool(tools.tools), starts_in_reasoning=bool(props and props.reasoning_starts_open)
        )
        head = {"model": body.model}
        if not stream:
            async for text in run.texts():
                reply.feed(text)
            reply.finish()
            message = reply.message()
            whole = _message(message["content"], message.get("reasoning_content"), reply)
            return web.json_response(_final(head, run, started, "message", whole))

        async def send_all(out: EventStream) -> None:
            async for text in run.texts():
                for delta in reply.feed(text):
                    await out.send(_piece(head, "message", _delta_message(delta)))
            for delta in reply.finish():
                await out.send(_piece(head, "message", _delta_message(delta)))
            if reply.calls:
                await out.send(_piece(head, "message", _message("", None, reply)))
            await out.send(_final(head, run, started, "message", _message("")))

        return await streamed(request, send_all, ndjson=True, error_event=ollama_error)


def _message(content: str, thought: str | None = None, reply: ChatReply | None = None) -> Any:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thought:
        message["thinking"] = thought
    if reply is not None and reply.calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "function": {
                    "index": i,
                    "name": call.name,
                    "arguments": json.loads(call.arguments),
                },
            }
            for i, call in enumerate(reply.calls)
        ]
    return message


def _delta_message(delta: Delta) -> dict[str, Any]:
    if delta.kind == "reasoning":
        return {"role": "assistant", "content": "", "thinking": delta.text}
    return {"role": "assistant", "content": delta.text}


def _piece(head: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    return {**head, "created_at": now(), key: value, "done": False}


def _final(head: dict[str, Any], run: Run, started: float, key: str, value: Any) -> dict[str, Any]:
    reason = run.finish if run.finish in ("stop", "length") else "stop"
    return {
        **head,
        "created_at": now(),
        key: value,
        "done": True,
        "done_reason": reason,
        **timings(run, started),
    }


# --- generate ------------------------------------------------------------------------


def generate_request(
    body: GenerateBody, default_max: int, images: tuple[ImageInput, ...] = ()
) -> GenerateRequest:
    if images and (body.raw or body.suffix is not None):
        raise e.InvalidParams(
            "images go into a chat prompt: not with raw or suffix", param="images"
        )
    if body.template:
        raise e.InvalidParams(
            "template overrides are not supported; load the model with a chat template",
            param="template",
        )
    sampling = sampling_of(body, default_max)
    prompt = body.prompt or ""
    if body.suffix is not None:
        return GenerateRequest(prompt=prompt, suffix=body.suffix, sampling=sampling)
    if body.raw:
        return GenerateRequest(prompt=prompt, sampling=sampling)
    turns = [ChatMessage("system", body.system)] if body.system else []
    turns.append(ChatMessage("user", prompt, images=images))
    return GenerateRequest(
        messages=tuple(turns), sampling=sampling, enable_thinking=thinking(body.think)
    )


async def generate(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    svc = services(request)
    config = svc.config.current
    body = await read_body(request, GenerateBody, config.http)
    may_load = may_load_models(request, config.http)
    model = await prepare(svc, body, may_load)
    keep_alive = keep_alive_seconds(body.keep_alive, may_load)
    (images,) = ollama_images(svc, [body.images or ()])
    if not body.prompt and body.suffix is None:
        return await load_only(svc, model, keep_alive, may_load, "response", "")
    generate_req = generate_request(body, config.generation.default_max_tokens, images)
    stream = body.stream is not False
    constraint = reply_format(body.format)
    async with reply_run(
        svc,
        generate_req,
        model,
        constraint,
        stream=stream,
        may_load=may_load,
        keep_alive=keep_alive,
    ) as run:
        props = svc.manager.resident_props()
        chat_like = not generate_req.prompt and generate_req.suffix is None
        reply = ChatReply(
            tools=False,
            starts_in_reasoning=chat_like and bool(props and props.reasoning_starts_open),
        )
        head = {"model": body.model}
        if not stream:
            parts: dict[str, list[str]] = {"content": [], "reasoning": []}
            async for text in run.texts():
                for delta in reply.feed(text):
                    parts[delta.kind].append(delta.text)
            for delta in reply.finish():
                parts[delta.kind].append(delta.text)
            whole = _final(head, run, started, "response", "".join(parts["content"]))
            if parts["reasoning"]:
                whole["thinking"] = "".join(parts["reasoning"])
            return web.json_response(whole)

        async def send_all(out: EventStream) -> None:
            async for text in run.texts():
                for delta in reply.feed(text):
                    await out.send(_generate_piece(head, delta))
            for delta in reply.finish():
                await out.send(_generate_piece(head, delta))
            await out.send(_final(head, run, started, "response", ""))

        return await streamed(request, send_all, ndjson=True, error_event=ollama_error)


def _generate_piece(head: dict[str, Any], delta: Delta) -> dict[str, Any]:
    if delta.kind == "reasoning":
        return {**_piece(head, "response", ""), "thinking": delta.text}
    return _piece(head, "response", delta.text)


# --- embeddings ----------------------------------------------------------------------


async def embed(request: web.Request) -> web.Response:
    started = time.monotonic()
    svc = services(request)
    http = svc.config.current.http
    body = await read_body(request, EmbedBody, http)
    may_load = may_load_models(request, http)
    model = await prepare(svc, body, may_load)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    keep_alive = keep_alive_seconds(body.keep_alive, may_load)
    result = await svc.manager.embed(texts, model, may_load=may_load, keep_alive=keep_alive)
    vectors = result.vectors
    if body.dimensions is not None:
        matryoshka = svc.registry.resolve(result.model_id).meta.matryoshka
        vectors = [shortened(v, body.dimensions, matryoshka) for v in vectors]
    return web.json_response(
        {
            "model": body.model,
            "embeddings": vectors,
            "total_duration": ns(time.monotonic() - started),
            "load_duration": 0,
            "prompt_eval_count": result.prompt_tokens,
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """The older single-prompt route: an empty prompt has an empty embedding."""
    svc = services(request)
    http = svc.config.current.http
    body = await read_body(request, EmbeddingsBody, http)
    may_load = may_load_models(request, http)
    model = await prepare(svc, body, may_load)
    if not body.prompt:
        return web.json_response({"embedding": []})
    keep_alive = keep_alive_seconds(body.keep_alive, may_load)
    result = await svc.manager.embed([body.prompt], model, may_load=may_load, keep_alive=keep_alive)
    return web.json_response({"embedding": result.vectors[0]})


ROUTES = (
    Route("POST", "/api/chat", chat, "Ollama: chat (NDJSON or one object)", ChatBody),
    Route(
        "POST", "/api/generate", generate, "Ollama: generate (NDJSON or one object)", GenerateBody
    ),
    Route("POST", "/api/embed", embed, "Ollama: embeddings", EmbedBody),
    Route(
        "POST", "/api/embeddings", embeddings, "Ollama: one embedding (older route)", EmbeddingsBody
    ),
)
