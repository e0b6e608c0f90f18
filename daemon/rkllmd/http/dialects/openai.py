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
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool, field_validator

from ...chat.parse import Delta
from ...chat.turn import ChatReply, generate_request
from ...requests import GenerateRequest, Usage
from ...wire import NUMBER, EmbedInput, to_sampling
from ..cards import CARD_CACHE, model_card, wanted_type
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ChatMessageIn, ModelName, NotSupported, Sampling
from ..services import services
from ..sse import EventStream
from ..streaming import Run, generation, model_to_use, streamed

# --- request bodies ----------------------------------------------------------------


class ChatCompletionRequest(Sampling):
    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Any = None
    enable_thinking: StrictBool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return value


class CompletionRequest(Sampling):
    model: ModelName | None = None
    prompt: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[list[str], Field(min_length=1, max_length=1)]
    )
    echo: NotSupported = False
    suffix: None = Field(None, description="not supported")

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(Body):
    model: ModelName | None = None
    input: EmbedInput
    encoding_format: Literal["float", "base64"] = "float"


# --- requests and answers ----------------------------------------------------------


def chat_request(body: ChatCompletionRequest, default_max: int) -> GenerateRequest:
    thinking = body.enable_thinking
    if thinking is None and body.chat_template_kwargs:
        flag = body.chat_template_kwargs.get("enable_thinking")
        thinking = flag if isinstance(flag, bool) else None
    return generate_request(
        body,
        body.messages,
        tools=body.tools,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        default_max=default_max,
        enable_thinking=thinking,
    )


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
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
    config = svc.config.current
    body = await read_body(request, ChatCompletionRequest, config.http)
    generate = chat_request(body, config.generation.default_max_tokens)
    model = model_to_use(request, body.model)
    async with generation(
        svc.manager,
        config.http,
        generate,
        model,
        may_load=may_load_models(request, config.http),
    ) as run:
        props = svc.manager.resident_props()
        opens = bool(props and props.reasoning_starts_open)
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
    config = svc.config.current
    body = await read_body(request, CompletionRequest, config.http)
    sampling = to_sampling(body, body.max_tokens, config.generation.default_max_tokens)
    generate = GenerateRequest(prompt=body.text(), sampling=sampling)
    model = model_to_use(request, body.model)
    async with generation(
        svc.manager,
        config.http,
        generate,
        model,
        may_load=may_load_models(request, config.http),
    ) as run:
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
    http = svc.config.current.http
    body = await read_body(request, EmbeddingRequest, http)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    result = await svc.manager.embed(
        texts, model_to_use(request, body.model), may_load=may_load_models(request, http)
    )
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, body.encoding_format)}
        for i, v in enumerate(result.vectors)
    ]
    tokens = result.prompt_tokens
    return web.json_response(
        {
            "object": "list",
            "data": data,
            "model": result.model_id,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# --- models ------------------------------------------------------------------------


async def list_models(request: web.Request) -> web.Response:
    manager = services(request).manager
    wanted = wanted_type(request.query.get("type"))
    body = request.app[CARD_CACHE].body(manager.list_models(), manager.resident_props(), wanted)
    return web.Response(body=body, content_type="application/json")


async def get_model(request: web.Request) -> web.Response:
    shown = services(request).manager.show(request.match_info["model_id"])
    return web.json_response(model_card(shown, shown.props))


ROUTES = (
    Route(
        "GET",
        "/v1/models",
        list_models,
        "OpenAI model list; ?type=chat|embedding|image|speech|draft filters",
    ),
    Route("GET", "/v1/models/{model_id:.+}", get_model, "OpenAI: one model"),
    Route(
        "POST",
        "/v1/chat/completions",
        chat_completions,
        "OpenAI chat (JSON or SSE)",
        ChatCompletionRequest,
    ),
    Route("POST", "/v1/completions", completions, "OpenAI text completion", CompletionRequest),
    Route("POST", "/v1/embeddings", embeddings, "OpenAI embeddings", EmbeddingRequest),
)
