"""OpenAI-compatible routes: models, chat completions, completions, embeddings.

Everything that can be wrong with a request is found before the first byte is
sent (validation, model resolution, queue admission, loading, and the first
event from the backend, which is where prompt-too-long surfaces). After that,
errors travel in-band as a final SSE event followed by ``[DONE]``.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
from datetime import datetime
from typing import Any

from aiohttp import web

from .. import errors as e
from ..backends.base import ChatMessage, GenerateRequest
from ..backends.base import Sampling as DomainSampling
from ..chatparse import Delta, OutputParser, ToolCall
from ..worker.proxy import DoneEvent, TokenEvent
from . import schemas as s
from .edge import read_body
from .errors import error_body
from .services import services
from .sse import Deadline, EventStream

FINISH = {"stop": "stop", "length": "length", "abort": "stop"}


def chat_request(body: s.ChatCompletionRequest, default_max: int) -> GenerateRequest:
    role = {"developer": "system"}
    messages = tuple(
        ChatMessage(role.get(m.role, m.role), m.text(), tuple(m.tool_calls or ()), m.tool_call_id)
        for m in body.messages
    )
    thinking = body.enable_thinking
    if thinking is None and body.chat_template_kwargs:
        flag = body.chat_template_kwargs.get("enable_thinking")
        thinking = flag if isinstance(flag, bool) else None
    return GenerateRequest(
        messages=messages,
        sampling=DomainSampling.from_request(
            body, body.max_completion_tokens or body.max_tokens, default_max
        ),
        tools=tuple(body.tools or ()),
        enable_thinking=thinking,
    )


def usage_body(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
    }


def _tool_calls_body(calls: list[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "index": i,
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for i, c in enumerate(calls)
    ]


def _delta_body(delta: Delta) -> dict[str, str]:
    return {"reasoning_content" if delta.kind == "reasoning" else "content": delta.text}


class ChatStream:
    """Turns backend events into chat.completion chunks."""

    def __init__(self, model: str, tools: bool, starts_in_reasoning: bool) -> None:
        self.id = "chatcmpl-" + uuid.uuid4().hex
        self.created = int(time.time())
        self.model = model
        # Some templates (DeepSeek-R1 distills) open <think> in the prompt itself.
        self.parser = OutputParser(
            reasoning=True, tools=tools, starts_in_reasoning=starts_in_reasoning
        )

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def usage_chunk(self, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage_body(usage),
        }


async def chat_completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config()
    body = await read_body(request, s.ChatCompletionRequest, config.http)
    generate = chat_request(body, config.generation.default_max_tokens)
    deadline = Deadline(
        config.http.first_token_timeout_seconds, config.http.request_timeout_seconds
    )
    async with svc.manager.generation(generate, body.model) as gen:
        first = await deadline.next(gen.events)
        opens = bool(svc.manager.prop("reasoning_starts_open"))
        chat = ChatStream(gen.model_id, tools=bool(body.tools), starts_in_reasoning=opens)
        if not body.stream:
            return await _chat_whole(chat, first, gen.events, deadline)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        stream = await EventStream.open(request)
        try:
            await _chat_chunks(chat, stream, first, gen.events, deadline, include_usage)
        except e.RkllmdError as exc:
            await stream.send(error_body(exc))
        await stream.done()
        return stream.response


async def _chat_chunks(
    chat: ChatStream,
    stream: EventStream,
    event: TokenEvent | DoneEvent,
    events: Any,
    deadline: Deadline,
    include_usage: bool,
) -> None:
    await stream.send(chat.chunk({"role": "assistant", "content": ""}))
    while isinstance(event, TokenEvent):
        for delta in chat.parser.feed(event.text):
            await stream.send(chat.chunk(_delta_body(delta)))
        event = await deadline.next(events)
    deltas, calls = chat.parser.finish()
    for delta in deltas:
        await stream.send(chat.chunk(_delta_body(delta)))
    if calls:
        await stream.send(chat.chunk({"tool_calls": _tool_calls_body(calls)}))
    await stream.send(chat.chunk({}, "tool_calls" if calls else FINISH[event.finish_reason]))
    if include_usage:
        await stream.send(chat.usage_chunk(event.usage))


async def _chat_whole(
    chat: ChatStream, event: TokenEvent | DoneEvent, events: Any, deadline: Deadline
) -> web.Response:
    parts: dict[str, list[str]] = {"content": [], "reasoning": []}
    while isinstance(event, TokenEvent):
        for delta in chat.parser.feed(event.text):
            parts[delta.kind].append(delta.text)
        event = await deadline.next(events)
    deltas, calls = chat.parser.finish()
    for delta in deltas:
        parts[delta.kind].append(delta.text)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(parts["content"])}
    if parts["reasoning"]:
        message["reasoning_content"] = "".join(parts["reasoning"])
    if calls:
        message["tool_calls"] = [
            {k: v for k, v in c.items() if k != "index"} for c in _tool_calls_body(calls)
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "tool_calls" if calls else FINISH[event.finish_reason],
    }
    return web.json_response(
        {
            "id": chat.id,
            "object": "chat.completion",
            "created": chat.created,
            "model": chat.model,
            "choices": [choice],
            "usage": usage_body(event.usage),
        }
    )


async def completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config()
    body = await read_body(request, s.CompletionRequest, config.http)
    sampling = DomainSampling.from_request(
        body, body.max_tokens, config.generation.default_max_tokens
    )
    generate = GenerateRequest(prompt=body.text(), sampling=sampling)
    deadline = Deadline(
        config.http.first_token_timeout_seconds, config.http.request_timeout_seconds
    )
    async with svc.manager.generation(generate, body.model) as gen:
        event = await deadline.next(gen.events)
        ident, created = "cmpl-" + uuid.uuid4().hex, int(time.time())

        def piece(text: str, finish: str | None) -> dict[str, Any]:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": gen.model_id,
                "choices": [choice],
            }

        if not body.stream:
            texts = []
            while isinstance(event, TokenEvent):
                texts.append(event.text)
                event = await deadline.next(gen.events)
            whole = piece("".join(texts), FINISH[event.finish_reason])
            return web.json_response({**whole, "usage": usage_body(event.usage)})
        stream = await EventStream.open(request)
        try:
            while isinstance(event, TokenEvent):
                await stream.send(piece(event.text, None))
                event = await deadline.next(gen.events)
            await stream.send(piece("", FINISH[event.finish_reason]))
            if body.stream_options and body.stream_options.include_usage:
                await stream.send(
                    {**piece("", None), "choices": [], "usage": usage_body(event.usage)}
                )
        except e.RkllmdError as exc:
            await stream.send(error_body(exc))
        await stream.done()
        return stream.response


async def embeddings(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, s.EmbeddingRequest, svc.config().http)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    model_id, vectors, tokens = await svc.manager.embed(texts, body.model)
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# --- models ------------------------------------------------------------------------


def model_card(entry: dict[str, Any], props: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = entry.get("metadata") or {}
    context = meta.get("context_length") or (props or {}).get("n_ctx")
    created = entry.get("modified")
    return {
        "id": entry["id"],
        "object": "model",
        "created": _epoch(created),
        "owned_by": "rkllmd",
        "name": meta.get("name") or entry["id"],
        "description": meta.get("description") or "",
        "contextLength": context,
        "type": meta.get("type") or "chat",
        "format": entry["format"],
        "size_bytes": entry["size_bytes"],
        "loaded": entry["loaded"],
    }


def _epoch(iso: str | None) -> int:
    if not iso:
        return 0
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


async def list_models(request: web.Request) -> web.Response:
    manager = services(request).manager
    wanted = request.query.get("type")
    resident = manager.props()
    cards = [model_card(m, resident if m["loaded"] else None) for m in manager.list_models()]
    if wanted:
        cards = [c for c in cards if c["type"] == wanted]
    return web.json_response({"object": "list", "data": cards})


async def get_model(request: web.Request) -> web.Response:
    shown = services(request).manager.show(request.match_info["model_id"])
    return web.json_response(model_card(shown, shown.get("props")))
