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
from dataclasses import replace
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool, field_validator

from ...chat.parse import Delta
from ...chat.turn import ChatReply, generate_request
from ...requests import GenerateRequest, TokenLogprob, Usage
from ...wire import NUMBER, EmbedInput, to_sampling
from ..cards import CARD_CACHE, model_card, wanted_type
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ChatMessageIn, ModelName, NotSupported, Sampling
from ..services import services
from ..sse import EventStream
from ..streaming import Run, generation, model_to_use, streamed
from .openai_logprobs import LegacyLogprobs, chat_logprobs

# --- request bodies ----------------------------------------------------------------


class ChatCompletionRequest(Sampling):
    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), NUMBER] | None = None
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
    logprobs: Annotated[int, Field(ge=0, le=20), NUMBER] | None = None

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
    turn = generate_request(
        body,
        body.messages,
        tools=body.tools,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        default_max=default_max,
        enable_thinking=thinking,
    )
    top = (body.top_logprobs or 0) if body.logprobs else None
    return replace(turn, n=body.n, logprobs=top)


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


def _chunk(
    answer: Answer,
    delta: dict[str, Any],
    finish: str | None = None,
    *,
    index: int = 0,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
    return answer.body(choices=[choice])


def timings(run: Run) -> dict[str, Any]:
    """llama-server's ``timings`` fields for what we measure: speculative decoding."""
    perf = run.done.perf or {}
    if "draft_tokens" not in perf:
        return {}
    return {
        "timings": {"draft_n": perf["draft_tokens"], "draft_n_accepted": perf["draft_accepted"]}
    }


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
        replies = [
            ChatReply(tools=bool(body.tools), starts_in_reasoning=opens) for _ in range(body.n)
        ]
        if not body.stream:
            return await _chat_whole(run, replies, generate.logprobs is not None)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        answer = Answer("chatcmpl-", "chat.completion.chunk", run.model_id)
        return await streamed(
            request, lambda stream: _chat_chunks(stream, answer, run, replies, include_usage)
        )


async def _chat_chunks(
    stream: EventStream, answer: Answer, run: Run, replies: list[ChatReply], include_usage: bool
) -> None:
    for index in range(len(replies)):
        await stream.send(_chunk(answer, {"role": "assistant", "content": ""}, index=index))
    async for token in run.tokens():
        deltas = replies[token.index].feed(token.text)
        logprobs = chat_logprobs(token.logprobs)
        if logprobs is not None and not deltas:  # text held back: the values go alone
            await stream.send(_chunk(answer, {}, index=token.index, logprobs=logprobs))
        for delta in deltas:
            await stream.send(
                _chunk(answer, _delta_body(delta), index=token.index, logprobs=logprobs)
            )
            logprobs = None
    for index, reply in enumerate(replies):
        for delta in reply.finish():
            await stream.send(_chunk(answer, _delta_body(delta), index=index))
        if reply.calls:
            calls = [{"index": i, **call.to_openai()} for i, call in enumerate(reply.calls)]
            await stream.send(_chunk(answer, {"tool_calls": calls}, index=index))
        finish = reply.finish_reason(run.finish_of(index))
        last = _chunk(answer, {}, finish, index=index)
        await stream.send({**last, **timings(run)} if index == len(replies) - 1 else last)
    if include_usage:
        await stream.send(answer.body(choices=[], usage=usage_body(run.done.usage)))


async def _chat_whole(run: Run, replies: list[ChatReply], logprobs: bool) -> web.Response:
    answer = Answer("chatcmpl-", "chat.completion", run.model_id)
    entries: list[list[TokenLogprob]] = [[] for _ in replies]
    async for token in run.tokens():
        replies[token.index].feed(token.text)
        entries[token.index].extend(token.logprobs or ())
    choices = []
    for index, reply in enumerate(replies):
        reply.finish()
        choices.append(
            {
                "index": index,
                "message": reply.message(),
                "logprobs": chat_logprobs(entries[index]) if logprobs else None,
                "finish_reason": reply.finish_reason(run.finish_of(index)),
            }
        )
    usage = usage_body(run.done.usage)
    return web.json_response(answer.body(choices=choices, usage=usage, **timings(run)))


async def completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config.current
    body = await read_body(request, CompletionRequest, config.http)
    sampling = to_sampling(body, body.max_tokens, config.generation.default_max_tokens)
    generate = GenerateRequest(
        prompt=body.text(), sampling=sampling, n=body.n, logprobs=body.logprobs
    )
    model = model_to_use(request, body.model)
    async with generation(
        svc.manager,
        config.http,
        generate,
        model,
        may_load=may_load_models(request, config.http),
    ) as run:
        answer = Answer("cmpl-", "text_completion", run.model_id)
        if not body.stream:
            return await _completion_whole(answer, run, body)

        async def send_all(stream: EventStream) -> None:
            legacy = [LegacyLogprobs() for _ in range(body.n)]
            async for token in run.tokens():
                logprobs = None
                if token.logprobs is not None:
                    logprobs = legacy[token.index].render(token.logprobs)
                await stream.send(_piece(answer, token.text, None, token.index, logprobs))
            for index in range(body.n):
                last = _piece(answer, "", run.finish_of(index), index, None)
                await stream.send({**last, **timings(run)} if index == body.n - 1 else last)
            if body.stream_options and body.stream_options.include_usage:
                await stream.send(answer.body(choices=[], usage=usage_body(run.done.usage)))

        return await streamed(request, send_all)


def _piece(
    answer: Answer, text: str, finish: str | None, index: int, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
    return answer.body(choices=[choice])


async def _completion_whole(answer: Answer, run: Run, body: CompletionRequest) -> web.Response:
    texts: list[list[str]] = [[] for _ in range(body.n)]
    entries: list[list[TokenLogprob]] = [[] for _ in range(body.n)]
    async for token in run.tokens():
        texts[token.index].append(token.text)
        entries[token.index].extend(token.logprobs or ())
    choices = [
        {
            "text": "".join(texts[i]),
            "index": i,
            "logprobs": None if body.logprobs is None else LegacyLogprobs().render(entries[i]),
            "finish_reason": run.finish_of(i),
        }
        for i in range(body.n)
    ]
    usage = usage_body(run.done.usage)
    return web.json_response(answer.body(choices=choices, usage=usage, **timings(run)))


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
