"""The chat turn both skins share: wire body -> GenerateRequest, text -> assistant message."""

from __future__ import annotations

from typing import Any

from rkllmd.chat.turn import ChatReply, generate_request
from rkllmd.http.dialects import openai
from rkllmd.requests import ChatMessage
from rkllmd.rpc import schemas as rpc_schemas

CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {}}}


def _messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]


def test_both_skins_build_the_same_request() -> None:
    fields = {"messages": _messages(), "tools": [TOOL], "max_tokens": 7, "stop": "x"}
    rpc = rpc_schemas.ChatParams.model_validate(fields)
    http = openai.ChatCompletionRequest.model_validate(fields)
    built = [
        generate_request(
            body,
            body.messages,
            tools=tools,
            max_tokens=7,
            default_max=99,
            enable_thinking=False,
        )
        for body, tools in ((rpc, rpc.tools), (http, http.tool_specs()))
    ]
    assert built[0] == built[1]
    request = built[0]
    assert request.messages[2] == ChatMessage("assistant", "", (CALL,))
    assert request.messages[3] == ChatMessage("tool", "42", (), "call_1")
    assert request.tools == (TOOL,)
    assert request.sampling.max_tokens == 7 and request.sampling.stop == ("x",)
    assert request.enable_thinking is False


def test_http_text_parts_and_developer_role() -> None:
    body = openai.ChatCompletionRequest.model_validate(
        {
            "messages": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text"}]},
            ]
        }
    )
    request = generate_request(
        body, body.messages, tools=body.tools, max_tokens=None, default_max=99, enable_thinking=None
    )
    assert request.messages == (ChatMessage("system", "rules"), ChatMessage("user", "a"))
    assert request.sampling.max_tokens == 99 and request.tools == ()


def test_reply_collects_content_reasoning_and_tool_calls() -> None:
    reply = ChatReply(tools=True, starts_in_reasoning=True)
    deltas = reply.feed("plan</think>Sure.")
    deltas += reply.feed('<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>')
    deltas += reply.finish()
    assert [(d.kind, d.text) for d in deltas] == [("reasoning", "plan"), ("content", "Sure.")]
    message = reply.message()
    assert message["role"] == "assistant" and message["content"] == "Sure."
    assert message["reasoning_content"] == "plan"
    [call] = message["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert reply.finish_reason("stop") == "tool_calls"


def test_plain_reply_keeps_the_runtime_finish_reason() -> None:
    reply = ChatReply(tools=False, starts_in_reasoning=False)
    reply.feed("hello ")
    reply.feed("world")
    reply.finish()
    assert reply.message() == {"role": "assistant", "content": "hello world"}
    assert reply.finish_reason("length") == "length"
