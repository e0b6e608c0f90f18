"""The simple chat dialect of an LM Studio-style proxy: /chat and /chat/stream
(NDJSON fragments), with a camelCase ``config``. ../shared/seeds/003_* is its
specification.
"""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import ConfigDict, Field

from ... import errors as e
from ...requests import ChatMessage, GenerateRequest, Sampling
from ...wire import NUMBER
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ChatMessageIn, ModelName
from ..services import services
from ..sse import EventStream
from ..streaming import generation, streamed


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

    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)] | None = None
    prompt: Annotated[str, Field(max_length=4_194_304)] | None = None
    config: SimpleChatConfig = SimpleChatConfig()


def _generate_request(body: SimpleChatRequest, default_max: int) -> GenerateRequest:
    c = body.config
    sampling = Sampling(
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


async def chat(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    config = svc.config.current
    body = await read_body(request, SimpleChatRequest, config.http)
    generate = _generate_request(body, config.generation.default_max_tokens)
    async with generation(
        svc.manager,
        config.http,
        generate,
        body.model,
        may_load=may_load_models(request, config.http),
    ) as run:
        if not request.path.endswith("/stream"):
            content = await run.text()
            return web.json_response(
                {
                    "model": run.model_id,
                    "content": content,
                    "stop_reason": run.finish,
                    "predicted_tokens": run.done.usage.completion_tokens,
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
                    "predicted_tokens": run.done.usage.completion_tokens,
                }
            )

        return await streamed(request, send_all, ndjson=True)


ROUTES = (
    Route("POST", "/chat", chat, "Simple chat: whole answer", SimpleChatRequest),
    Route("POST", "/chat/stream", chat, "Simple chat: NDJSON fragments", SimpleChatRequest),
)
