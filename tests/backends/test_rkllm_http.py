"""The NPU backend through the OpenAI HTTP API: tools, reasoning, embeddings, streaming."""

from __future__ import annotations

import json

import openai

from tests.backends.conftest import MODEL_ID, NpuDaemon

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def _client(daemon) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0)


def test_tool_calls_over_http_stream_and_json(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    call = '<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
    messages = [{"role": "user", "content": f"Weather? [[say:{call}]]"}]
    with _client(daemon) as client:
        whole = client.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER])
        choice = whole.choices[0]
        assert choice.finish_reason == "tool_calls"
        (tool_call,) = choice.message.tool_calls or []
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"city": "Paris"}
        chunks = list(
            client.chat.completions.create(
                model=MODEL_ID, messages=messages, tools=[WEATHER], stream=True
            )
        )
        streamed = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        assert [tc.function.name for tc in streamed if tc.function] == ["get_weather"]
        assert chunks[-1].choices[0].finish_reason == "tool_calls"
        follow = [
            *messages,
            {"role": "assistant", "content": "", "tool_calls": [tool_call.model_dump()]},
            {
                "role": "tool",
                "content": '{"temp": 21} [[say:It is 21.]]',
                "tool_call_id": tool_call.id,
            },
        ]
        answer = client.chat.completions.create(model=MODEL_ID, messages=follow, tools=[WEATHER])
        assert answer.choices[0].message.content == "It is 21."


def test_reasoning_content_over_http(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    say = "[[say:<think>\\nLet me think.\\n</think>\\n\\nThe answer is 4.]]"
    with _client(daemon) as client:
        whole = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "user", "content": say}]
        )
        message = whole.choices[0].message
        assert message.content == "The answer is 4."
        assert message.model_extra and message.model_extra["reasoning_content"] == "Let me think."
        chunks = list(
            client.chat.completions.create(
                model=MODEL_ID, stream=True, messages=[{"role": "user", "content": say}]
            )
        )
        reasoning = "".join(
            (c.choices[0].delta.model_extra or {}).get("reasoning_content", "")
            for c in chunks
            if c.choices
        )
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert reasoning == "Let me think." and content == "The answer is 4."


def test_embeddings_over_http(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    with _client(daemon) as client:
        result = client.embeddings.create(model=MODEL_ID, input=["one", "two"])
    vectors = [d.embedding for d in result.data]
    assert len(vectors) == 2
    for vector in vectors:
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-3
