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

from ..backends.base import GenerateRequest
from ..backends.base import Sampling as DomainSampling
from ..chatparse import Delta
from ..chatturn import ChatReply, generate_request
from . import schemas as s
from .edge import read_body
from .services import services
from .sse import EventStream
from .streaming import Run, generation, streamed


def chat_request(body: s.ChatCompletionRequest, default_max: int) -> GenerateRequest:
    thinking = body.enable_thinking
    if thinking is None and body.chat_template_kwargs:
        flag = body.chat_template_kwargs.get("enable_thinking")
        thinking = flag if isinstance(flag, bool) else None
    return generate_request(
        body,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        default_max=default_max,
        enable_thinking=thinking,
    )


def usage_body(usage: dict[str, int]) -> dict[str, Any]:
    return {
        "prompt_tokens": usage["prompt_tokens"],
        "completion_tokens": usage["completion_tokens"],
        "total_tokens": usage["total_tokens"],
        "prompt_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
    }


def _delta_body(delta: Delta) -> dict[str, str]:
    return {"reasoning_content" if delta.kind == "reasoning" else "content": delta.text}


class Answer:
    """The fields every object of one answer repeats (id, object, created, model)."""

    def __init__(self, prefix: str, kind: str, model: str) -> None:
        self.head = {
            "id": prefix + uuid.uuid4().hex,
            "object": kind,
            "created": int(time.time()),
            "model": model,
        }

    def body(self, **fields: Any) -> dict[str, Any]:
        return {**self.head, **fields}


def _chunk(answer: Answer, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return answer.body(choices=[choice])


async def chat_completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config()
    body = await read_body(request, s.ChatCompletionRequest, config.http)
    generate = chat_request(body, config.generation.default_max_tokens)
    async with generation(svc.manager, config.http, generate, body.model) as run:
        opens = bool(svc.manager.prop("reasoning_starts_open"))
        reply = ChatReply(tools=bool(body.tools), starts_in_reasoning=opens)
        if not body.stream:
            return await _chat_whole(run, reply)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        answer = Answer("chatcmpl-", "chat.completion.chunk", run.model_id)
        return await streamed(
            request, lambda stream: _chat_chunks(stream, answer, run, reply, include_usage)
        )


async def _chat_chunks(
    stream: EventStream, answer: Answer, run: Run, reply: ChatReply, include_usage: bool
) -> None:
    await stream.send(_chunk(answer, {"role": "assistant", "content": ""}))
    async for text in run.texts():
        for delta in reply.feed(text):
            await stream.send(_chunk(answer, _delta_body(delta)))
    for delta in reply.finish():
        await stream.send(_chunk(answer, _delta_body(delta)))
    if reply.calls:
        calls = [{"index": i, **call.to_openai()} for i, call in enumerate(reply.calls)]
        await stream.send(_chunk(answer, {"tool_calls": calls}))
    await stream.send(_chunk(answer, {}, reply.finish_reason(run.finish)))
    if include_usage:
        await stream.send(answer.body(choices=[], usage=usage_body(run.done.usage)))


async def _chat_whole(run: Run, reply: ChatReply) -> web.Response:
    answer = Answer("chatcmpl-", "chat.completion", run.model_id)
    async for text in run.texts():
        reply.feed(text)
    reply.finish()
    choice = {
        "index": 0,
        "message": reply.message(),
        "logprobs": None,
        "finish_reason": reply.finish_reason(run.finish),
    }
    return web.json_response(answer.body(choices=[choice], usage=usage_body(run.done.usage)))


async def completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config()
    body = await read_body(request, s.CompletionRequest, config.http)
    sampling = DomainSampling.from_request(
        body, body.max_tokens, config.generation.default_max_tokens
    )
    generate = GenerateRequest(prompt=body.text(), sampling=sampling)
    async with generation(svc.manager, config.http, generate, body.model) as run:
        answer = Answer("cmpl-", "text_completion", run.model_id)

        def piece(text: str, finish: str | None) -> dict[str, Any]:
            choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}
            return answer.body(choices=[choice])

        if not body.stream:
            whole = piece(await run.text(), run.finish)
            return web.json_response({**whole, "usage": usage_body(run.done.usage)})

        async def send_all(stream: EventStream) -> None:
            async for text in run.texts():
                await stream.send(piece(text, None))
            await stream.send(piece("", run.finish))
            if body.stream_options and body.stream_options.include_usage:
                await stream.send(answer.body(choices=[], usage=usage_body(run.done.usage)))

        return await streamed(request, send_all)


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
