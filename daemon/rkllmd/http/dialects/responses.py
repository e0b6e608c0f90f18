"""OpenAI's Responses API: POST /v1/responses (whole or streamed as its typed events),
GET and DELETE /v1/responses/{id}.

``input`` is a string or items (messages, ``function_call``, ``function_call_output``);
``instructions`` become the system turn of this request only; ``previous_response_id``
continues a stored conversation (``[responses]`` bounds the store). Function tools,
``tool_choice`` and ``text.format`` (json_object, json_schema) work as in chat, through
the same structured-reply path.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, StrictBool, ValidationError

from ... import errors as e
from ... import structured
from ...chat.turn import ChatReply, to_message
from ...config import VisionSection
from ...requests import ChatMessage, GenerateRequest
from ...wire import NUMBER, SamplingFields, to_sampling
from ..edge import may_load_models, read_body
from ..routing import Route
from ..schemas import Body, ChatMessageIn, ModelName, message_images
from ..services import Services, services
from ..sse import EventStream
from ..streaming import Run, model_to_use
from ..structured import reply_run
from .responses_output import Events, Item, new_id, output_items, usage_body

_ID = {"type": "string", "minLength": 1, "maxLength": 256}
_TEXT_PART = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": ["input_text", "output_text", "text"]},
        "text": {"type": "string"},
    },
}
# What /openapi.json says an input item is (the handler dispatches on "type" itself, to
# name the item a problem is in): a message, a function call, its output, reasoning.
INPUT_ITEM_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "type": {"const": "message"},
                "role": {"enum": ["system", "developer", "user", "assistant"]},
                "content": {"anyOf": [{"type": "string"}, {"type": "array", "items": _TEXT_PART}]},
            },
        },
        {
            "type": "object",
            "required": ["type", "call_id", "name", "arguments"],
            "properties": {
                "type": {"const": "function_call"},
                "call_id": _ID,
                "name": _ID,
                "arguments": {"type": "string"},
            },
        },
        {
            "type": "object",
            "required": ["type", "call_id", "output"],
            "properties": {
                "type": {"const": "function_call_output"},
                "call_id": _ID,
                "output": {"type": "string"},
            },
        },
        {"type": "object", "required": ["type"], "properties": {"type": {"const": "reasoning"}}},
    ]
}


class ResponsesRequest(Body, SamplingFields):
    model: ModelName | None = None
    input: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[
            list[Item],
            Field(max_length=4096, json_schema_extra={"items": INPUT_ITEM_SCHEMA}),
        ]
    )
    instructions: Annotated[str, Field(max_length=4_194_304)] | None = None
    tools: Annotated[list[FunctionTool], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    max_output_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    text: Item | None = None
    previous_response_id: Annotated[str, Field(max_length=200)] | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    metadata: dict[str, Any] | None = None
    reasoning: Item | None = None


class FunctionTool(Body):
    """A function tool (the only kind served: hosted tools are refused by the schema)."""

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    description: Annotated[str, Field(max_length=65_536)] | None = None
    parameters: dict[str, Any] | None = None
    strict: StrictBool | None = None


class InputMessage(ChatMessageIn):
    type: Literal["message"] | None = None
    role: Literal["system", "developer", "user", "assistant"]


class FunctionCallItem(Body):
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    name: Annotated[str, Field(min_length=1, max_length=256)]
    arguments: Annotated[str, Field(max_length=4_194_304)]


class FunctionOutputItem(Body):
    call_id: Annotated[str, Field(min_length=1, max_length=256)]
    output: Annotated[str, Field(max_length=4_194_304)] | list[Item]


# --- input ---------------------------------------------------------------------------


def _parsed(model: type[BaseModel], data: Any, where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        inner = ".".join(str(p) for p in first["loc"])
        place = f"{where}.{inner}" if inner else where
        raise e.InvalidParams(f"{place}: {first['msg']}", param=place) from None


async def input_messages(body: ResponsesRequest, limits: VisionSection) -> list[ChatMessage]:
    """The items as chat turns (consecutive calls join one assistant turn), message
    items with their images (``input_image``), decoded and bounded together (allowed
    URLs fetched) once every item has been read."""
    if isinstance(body.input, str):
        return [ChatMessage("user", body.input)]
    turns: list[ChatMessage] = []
    received: list[tuple[int, ChatMessageIn]] = []  # message items and their turn
    for index, item in enumerate(body.input):
        where = f"input[{index}]"
        kind = item.get("type", "message") if isinstance(item, dict) else None
        if kind == "message":
            message = _parsed(InputMessage, item, where)
            received.append((len(turns), message))
            turns.append(to_message(message))
        elif kind == "function_call":
            call = _parsed(FunctionCallItem, item, where)
            wire: Item = {"id": call.call_id, "type": "function"}
            wire["function"] = {"name": call.name, "arguments": call.arguments}
            last = turns[-1] if turns else None
            if last is not None and last.role == "assistant" and not last.content:
                turns[-1] = ChatMessage("assistant", "", (*last.tool_calls, wire))
            else:
                turns.append(ChatMessage("assistant", "", (wire,)))
        elif kind == "function_call_output":
            output = _parsed(FunctionOutputItem, item, where)
            text = output.output if isinstance(output.output, str) else _parts_text(output.output)
            turns.append(ChatMessage("tool", text, tool_call_id=output.call_id))
        elif kind == "reasoning":
            continue  # our own reasoning, handed back: not part of the prompt
        else:
            raise e.InvalidParams(f"{where}: items of type {kind!r} are not supported", param=where)
    images = await message_images([message for _, message in received], limits)
    for (at, _), seen in zip(received, images, strict=True):
        if seen:
            turns[at] = replace(turns[at], images=seen)
    return turns


def _parts_text(parts: list[Item]) -> str:
    return "".join(str(p.get("text") or "") for p in parts if isinstance(p, dict))


def chat_tools(tools: list[FunctionTool] | None) -> list[Item] | None:
    """Responses' flat function tools in chat's nested shape."""
    if tools is None:
        return None
    return [
        {
            "type": "function",
            "function": tool.model_dump(
                include={"name", "description", "parameters"}, exclude_none=True
            ),
        }
        for tool in tools
    ]


class Turn:
    """One Responses request as the manager runs it."""

    def __init__(self, svc: Services, body: ResponsesRequest, turns: list[ChatMessage]) -> None:
        config = svc.config.current
        history: tuple[ChatMessage, ...] = ()
        if body.previous_response_id:
            history = svc.responses.get(config.responses, body.previous_response_id).history
        self.conversation = (*history, *turns)
        tools = chat_tools(body.tools)
        self.tools = structured.tool_choice(tools, body.tool_choice, body.parallel_tool_calls)
        fmt = (body.text or {}).get("format")
        self.constraint = self.tools.constraint or structured.response_format(fmt, "text.format")
        prompt = self.conversation
        if body.instructions:
            prompt = (ChatMessage("system", body.instructions), *prompt)
        effort = (body.reasoning or {}).get("effort")
        self.request = GenerateRequest(
            messages=prompt,
            sampling=to_sampling(
                body, body.max_output_tokens, config.generation.default_max_tokens
            ),
            tools=self.tools.tools,
            enable_thinking=None if effort is None else effort not in ("none", "minimal"),
        )


# --- output --------------------------------------------------------------------------


class Answer:
    """The response object, from created (in progress) to completed."""

    def __init__(self, body: ResponsesRequest, turn: Turn, model: str) -> None:
        self.id = new_id("resp")
        fmt = (body.text or {}).get("format") or {"type": "text"}
        self.fields: Item = {
            "id": self.id,
            "object": "response",
            "created_at": int(time.time()),
            "status": "in_progress",
            "model": model,
            "output": [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.instructions,
            "max_output_tokens": body.max_output_tokens,
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": body.previous_response_id,
            "temperature": body.temperature,
            "top_p": body.top_p,
            "tool_choice": body.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "text": {"format": fmt},
            "metadata": body.metadata or {},
            "store": body.store is not False,
            "truncation": "disabled",
            "usage": None,
        }

    def finished(self, run: Run, output: list[Item]) -> Item:
        length = run.finish == "length"
        self.fields.update(
            status="incomplete" if length else "completed",
            incomplete_details={"reason": "max_output_tokens"} if length else None,
            output=output,
            usage=usage_body(run.done.usage),
            completed_at=int(time.time()),
        )
        return dict(self.fields)


def _remember(
    svc: Services, body: ResponsesRequest, turn: Turn, response: Item, reply: ChatReply
) -> None:
    if body.store is False:
        return
    answer = reply.message()
    calls = tuple(call.to_openai() for call in reply.calls)
    history = (*turn.conversation, ChatMessage("assistant", answer["content"], calls))
    svc.responses.put(svc.config.current.responses, response, history)


# --- routes --------------------------------------------------------------------------


async def create(request: web.Request) -> web.StreamResponse:
    svc = services(request)
    body = await read_body(request, ResponsesRequest, svc.config.current.http)
    turn = Turn(svc, body, await input_messages(body, svc.config.current.vision))
    stream = bool(body.stream)
    model = model_to_use(request, body.model)
    may_load = may_load_models(request, svc.config.current.http)
    async with reply_run(
        svc, turn.request, model, turn.constraint, stream=stream, may_load=may_load
    ) as run:
        props = svc.manager.resident_props()
        reply = ChatReply(
            tools=bool(turn.tools.tools),
            starts_in_reasoning=bool(props and props.reasoning_starts_open),
            single_call=turn.tools.single,
        )
        answer = Answer(body, turn, run.model_id)
        if not stream:
            async for text in run.texts():
                reply.feed(text)
            reply.finish()
            message = reply.message()
            reasoning = message.get("reasoning_content") or ""
            response = answer.finished(run, output_items(reply, reasoning, message["content"]))
            _remember(svc, body, turn, response, reply)
            return web.json_response(response)
        return await _stream(request, svc, body, turn, run, reply, answer)


async def _stream(
    request: web.Request,
    svc: Services,
    body: ResponsesRequest,
    turn: Turn,
    run: Run,
    reply: ChatReply,
    answer: Answer,
) -> web.StreamResponse:
    out = await EventStream.open(request)
    events = Events(out)
    try:
        await events.send("response.created", response=dict(answer.fields))
        await events.send("response.in_progress", response=dict(answer.fields))
        async for text in run.texts():
            for delta in reply.feed(text):
                await events.delta(delta)
        for delta in reply.finish():
            await events.delta(delta)
        await events.finish_text(len(reply.calls))
        for call in reply.calls:
            await events.call(call)
        response = answer.finished(run, events.items)
        _remember(svc, body, turn, response, reply)
        name = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        await events.send(name, response=response)
    except e.RkllmdError as exc:
        await events.send("error", code=exc.code, message=exc.message, param=None)
    await out.done(marker=False)
    return out.response


async def retrieve(request: web.Request) -> web.Response:
    svc = services(request)
    stored = svc.responses.get(svc.config.current.responses, request.match_info["response_id"])
    return web.json_response(stored.body)


async def delete(request: web.Request) -> web.Response:
    svc = services(request)
    response_id = request.match_info["response_id"]
    svc.responses.delete(svc.config.current.responses, response_id)
    return web.json_response({"id": response_id, "object": "response.deleted", "deleted": True})


ROUTES = (
    Route(
        "POST",
        "/v1/responses",
        create,
        "OpenAI Responses API (JSON or typed SSE events)",
        ResponsesRequest,
    ),
    Route(
        "GET", "/v1/responses/{response_id}", retrieve, "OpenAI Responses API: a stored response"
    ),
    Route(
        "DELETE", "/v1/responses/{response_id}", delete, "OpenAI Responses API: forget a response"
    ),
)
