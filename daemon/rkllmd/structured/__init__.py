"""Structured replies: JSON, JSON valid against a schema, forced tool calls.

The dialects turn their wire fields (OpenAI ``response_format``/``tool_choice``,
Responses ``text.format``, TabbyAPI ``json_schema``, Ollama ``format``) into one
``Constraint``; ``constrain`` puts it into the request (instruction and grammar)
and ``retry_request`` builds the next attempt after a reply failed its check.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ..errors import InvalidParams
from ..requests import ChatMessage, GenerateRequest
from .constraint import (
    Constraint,
    JsonReply,
    Tool,
    ToolCallReply,
    checked_schema,
    tool_from_openai,
)

__all__ = [
    "Constraint",
    "JsonReply",
    "Tool",
    "ToolCallReply",
    "ToolChoice",
    "constrain",
    "json_schema_reply",
    "response_format",
    "retry_request",
    "tool_choice",
]


def json_schema_reply(schema: Any, where: str, name: str | None = None) -> JsonReply:
    return JsonReply(checked_schema(schema, where), name)


def response_format(value: Any, where: str = "response_format") -> JsonReply | None:
    """OpenAI's ``response_format`` (chat) or the Responses API's ``text.format``
    (the same with the json_schema fields flattened into it)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParams(f"{where} must be an object", param=where)
    kind = value.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return JsonReply()
    if kind == "json_schema":
        spec = value.get("json_schema", value)
        if not isinstance(spec, dict) or "schema" not in spec:
            raise InvalidParams(f"{where}: json_schema.schema is required", param=where)
        name = spec.get("name") if isinstance(spec.get("name"), str) else None
        return json_schema_reply(spec["schema"], f"{where}.json_schema.schema", name)
    raise InvalidParams(f"{where}: type {kind!r} is not supported", param=where)


class ToolChoice:
    """What ``tools`` + ``tool_choice`` + ``parallel_tool_calls`` ask for.

    ``tools``: the definitions the chat template sees (none for "none");
    ``constraint``: set when a call is forced ("required", a named function);
    ``single``: at most one call is kept (``parallel_tool_calls: false``).
    """

    def __init__(
        self,
        tools: tuple[dict[str, Any], ...],
        constraint: ToolCallReply | None,
        single: bool,
    ) -> None:
        self.tools = tools
        self.constraint = constraint
        self.single = single


def tool_choice(
    tools: list[dict[str, Any]] | None,
    choice: Any,
    parallel: bool | None,
    where: str = "tool_choice",
) -> ToolChoice:
    """OpenAI chat's and the Responses API's tool selection (their shapes differ only
    in where a named function's name sits)."""
    defined = tuple(tools or ())
    single = parallel is False
    if choice is None or choice == "auto":
        return ToolChoice(defined, None, single)
    if choice == "none":
        return ToolChoice((), None, single)
    name = None if choice == "required" else _named(choice)
    if choice != "required" and name is None:
        raise InvalidParams(f"{where}: expected none, auto, required or a function", param=where)
    if not defined:
        raise InvalidParams(f"{where} needs tools to choose from", param=where)
    specs = [tool_from_openai(_as_chat_tool(t), f"tools[{i}]") for i, t in enumerate(defined)]
    if name is None:
        return ToolChoice(defined, ToolCallReply(tuple(specs), parallel=not single), single)
    chosen = [t for t in specs if t.name == name]
    if not chosen:
        raise InvalidParams(f"{where}: no tool is named {name!r}", param=where)
    # A named function is called once.
    return ToolChoice(defined, ToolCallReply((chosen[0],), parallel=False), True)


def _named(choice: Any) -> str | None:
    if not isinstance(choice, dict) or choice.get("type") != "function":
        return None
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    return name if isinstance(name, str) else None


def _as_chat_tool(tool: Any) -> Any:
    """Responses API tools are flat ({"type", "name", "parameters"}); chat nests them."""
    if isinstance(tool, dict) and "function" not in tool and "name" in tool:
        return {"type": "function", "function": tool}
    return tool


def constrain(request: GenerateRequest, constraint: Constraint | None) -> GenerateRequest:
    """The request with the constraint's grammar and (for chats) its instruction."""
    if constraint is None:
        return request
    sampling = replace(request.sampling, grammar=constraint.grammar())
    if request.prompt is not None or request.prompt_tokens is not None:
        return replace(request, sampling=sampling)
    return replace(request, sampling=sampling, messages=_instructed(request, constraint))


def _instructed(request: GenerateRequest, constraint: Constraint) -> tuple[ChatMessage, ...]:
    messages = list(request.messages)
    instruction = constraint.instruction()
    if messages and messages[0].role == "system":
        first = messages[0]
        messages[0] = replace(first, content=f"{first.content}\n\n{instruction}".strip())
    else:
        messages.insert(0, ChatMessage("system", instruction))
    return tuple(messages)


def retry_request(
    request: GenerateRequest, reply: str, problem: str, attempt: int
) -> GenerateRequest:
    """The next attempt after ``reply`` failed its check: a chat is told what was wrong
    (so that even greedy decoding answers differently); a raw prompt gets a new seed."""
    seed = (request.sampling.seed or 0) + attempt
    sampling = replace(request.sampling, seed=seed % 2**32)
    if request.prompt is not None or request.prompt_tokens is not None:
        return replace(request, sampling=sampling)
    feedback = (
        f"That reply is not valid: {problem}. "
        "Answer again, exactly as instructed, with nothing else."
    )
    messages = (*request.messages, ChatMessage("assistant", reply), ChatMessage("user", feedback))
    return replace(request, messages=messages, sampling=sampling)
