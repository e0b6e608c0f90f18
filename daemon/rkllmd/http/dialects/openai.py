"""OpenAI-compatible routes: models, chat completions, completions (embeddings:
``openai_embeddings.py``).

Everything that can be wrong with a request is found before the first byte is
sent (validation, model resolution, queue admission, loading, and the first
event from the backend, which is where prompt-too-long surfaces). After that,
errors travel in-band as a final SSE event followed by ``[DONE]``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool

from ... import errors as e
from ... import structured
from ...chat.parse import Delta
from ...chat.turn import ChatReply, generate_request
from ...requests import GenerateRequest, ImageInput, TokenLogprob, Usage
from ...structured import Constraint, JsonReply
from ...wire import NUMBER, to_sampling
from ..cards import CARD_CACHE, model_card, wanted_type
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ChatMessageIn, ModelName, Sampling, TokenId, message_images
from ..services import Services, services
from ..sse import EventStream
from ..streaming import Run, model_to_use, streamed
from ..structured import reply_run
from .openai_logprobs import LegacyLogprobs, chat_logprobs

# --- request bodies ----------------------------------------------------------------

TokenIds = Annotated[list[TokenId], Field(min_length=1)]
JsonObject = dict[str, Any]


class StructuredFields(Sampling):
    """How the reply must look: OpenAI's ``response_format``, or TabbyAPI's
    ``json_schema`` (a bare schema, the same as a json_schema response_format)."""

    response_format: JsonObject | None = None
    json_schema: JsonObject | None = None

    def reply_format(self) -> JsonReply | None:
        if self.json_schema is not None:
            return structured.json_schema_reply(self.json_schema, "json_schema")
        return structured.response_format(self.response_format)


class FunctionSpec(Body):
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: Annotated[str, Field(max_length=65_536)] | None = None
    parameters: JsonObject | None = None
    strict: StrictBool | None = None


class ChatTool(Body):
    """A function tool, as chat templates and tool_choice take it."""

    type: Literal["function"]
    function: FunctionSpec


class ChatCompletionRequest(StructuredFields):
    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20), NUMBER] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    tools: Annotated[list[ChatTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    enable_thinking: StrictBool | None = None
    chat_template_kwargs: JsonObject | None = None

    def tool_specs(self) -> list[JsonObject] | None:
        """The tools as chat templates take them (plain JSON)."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None


class CompletionRequest(StructuredFields):
    model: ModelName | None = None
    prompt: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[list[str], Field(min_length=1, max_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=1)]
    )
    echo: StrictBool | None = None
    suffix: Annotated[str, Field(max_length=4_194_304)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=20), NUMBER] | None = None

    def text(self) -> str | None:
        prompt = self.prompt[0] if _is_batch(self.prompt) else self.prompt
        return prompt if isinstance(prompt, str) else None

    def token_ids(self) -> tuple[int, ...] | None:
        prompt = self.prompt[0] if _is_batch(self.prompt) else self.prompt
        return tuple(prompt) if isinstance(prompt, list) else None  # type: ignore[arg-type]


def _is_batch(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], str | list)


# --- requests and answers ----------------------------------------------------------


class ChatTurn:
    """A chat body as the manager runs it: the request, the reply's constraint
    (a forced tool call wins over a response format) and the tool selection."""

    def __init__(
        self,
        body: ChatCompletionRequest,
        default_max: int,
        images: list[tuple[ImageInput, ...]] | None = None,
    ) -> None:
        self.tools = structured.tool_choice(
            body.tool_specs(), body.tool_choice, body.parallel_tool_calls
        )
        thinking = body.enable_thinking
        if thinking is None and body.chat_template_kwargs:
            flag = body.chat_template_kwargs.get("enable_thinking")
            thinking = flag if isinstance(flag, bool) else None
        self.request = generate_request(
            body,
            body.messages,
            tools=list(self.tools.tools),
            max_tokens=body.max_completion_tokens or body.max_tokens,
            default_max=default_max,
            enable_thinking=thinking,
            images=images or (),
        )
        top = (body.top_logprobs or 0) if body.logprobs else None
        self.request = replace(self.request, n=body.choices, logprobs=top)
        self.constraint: Constraint | None = self.tools.constraint or body.reply_format()
        if self.constraint is not None and body.choices > 1:
            raise e.InvalidParams("a structured reply is given once: n must be 1", param="n")

    def replies(self, svc: Services) -> list[ChatReply]:
        """One per choice."""
        props = svc.manager.resident_props()
        return [
            ChatReply(
                tools=bool(self.tools.tools),
                starts_in_reasoning=bool(props and props.reasoning_starts_open),
                single_call=self.tools.single,
            )
            for _ in range(self.request.n)
        ]


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
    images = await message_images(body.messages, config.vision)
    turn = ChatTurn(body, config.generation.default_max_tokens, images)
    stream = bool(body.stream)
    model = model_to_use(request, body.model)
    may_load = may_load_models(request, config.http)
    async with reply_run(
        svc, turn.request, model, turn.constraint, stream=stream, may_load=may_load
    ) as run:
        replies = turn.replies(svc)
        if not stream:
            return await _chat_whole(run, replies, turn.request.logprobs is not None)
        answer = Answer("chatcmpl-", "chat.completion.chunk", run.model_id)
        return await streamed(
            request, lambda events: _chat_chunks(events, answer, run, replies, body.include_usage)
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


def completion_request(body: CompletionRequest, default_max: int) -> GenerateRequest:
    sampling = to_sampling(body, body.max_tokens, default_max)
    tokens = body.token_ids()
    if tokens is not None and (body.echo or body.suffix is not None):
        which = "echo" if body.echo else "suffix"
        raise e.InvalidParams(f"{which} needs the prompt as text, not token ids", param=which)
    return GenerateRequest(
        prompt=body.text(),
        prompt_tokens=tokens,
        suffix=body.suffix,
        sampling=sampling,
        n=body.choices,
        logprobs=body.logprobs,
    )


async def completions(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config.current
    body = await read_body(request, CompletionRequest, config.http)
    generate = completion_request(body, config.generation.default_max_tokens)
    constraint = body.reply_format()
    if constraint is not None and body.choices > 1:
        raise e.InvalidParams("a structured reply is given once: n must be 1", param="n")
    echoed = (body.text() or "") if body.echo else ""
    model = model_to_use(request, body.model)
    may_load = may_load_models(request, config.http)
    async with reply_run(
        svc, generate, model, constraint, stream=bool(body.stream), may_load=may_load
    ) as run:
        answer = Answer("cmpl-", "text_completion", run.model_id)
        if not body.stream:
            return await _completion_whole(answer, run, body, echoed)

        async def send_all(stream: EventStream) -> None:
            legacy = [LegacyLogprobs() for _ in range(body.choices)]
            if echoed:
                for index in range(body.choices):
                    await stream.send(_piece(answer, echoed, None, index, None))
            async for token in run.tokens():
                logprobs = None
                if token.logprobs is not None:
                    logprobs = legacy[token.index].render(token.logprobs)
                await stream.send(_piece(answer, token.text, None, token.index, logprobs))
            for index in range(body.choices):
                last = _piece(answer, "", run.finish_of(index), index, None)
                await stream.send({**last, **timings(run)} if index == body.choices - 1 else last)
            if body.include_usage:
                await stream.send(answer.body(choices=[], usage=usage_body(run.done.usage)))

        return await streamed(request, send_all)


def _piece(
    answer: Answer, text: str, finish: str | None, index: int, logprobs: dict[str, Any] | None
) -> dict[str, Any]:
    choice = {"text": text, "index": index, "logprobs": logprobs, "finish_reason": finish}
    return answer.body(choices=[choice])


async def _completion_whole(
    answer: Answer, run: Run, body: CompletionRequest, echoed: str
) -> web.Response:
    texts: list[list[str]] = [[echoed] for _ in range(body.choices)]
    entries: list[list[TokenLogprob]] = [[] for _ in range(body.choices)]
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
        for i in range(body.choices)
    ]
    usage = usage_body(run.done.usage)
    return web.json_response(answer.body(choices=choices, usage=usage, **timings(run)))


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
)
