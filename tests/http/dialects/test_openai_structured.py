"""Structured output and forced tool calls through the official openai client (sync and
async) against a real daemon: llama.cpp enforces them with the daemon's grammar."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from tests.helpers import DaemonProcess

pytestmark = pytest.mark.real_model


@pytest.fixture
def daemon(shared_daemon: DaemonProcess) -> DaemonProcess:
    return shared_daemon


@pytest.fixture
def api(daemon: DaemonProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        yield client


class City(BaseModel):
    name: str
    country: str
    population: int


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "pet": {"anyOf": [{"type": "null"}, {"enum": ["cat", "dog"]}]},
    },
    "required": ["name", "age", "hobbies", "pet"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
    },
}


def ask(content: str) -> list[Any]:
    return [{"role": "user", "content": content}]


def test_parse_with_a_pydantic_model(api: openai.OpenAI) -> None:
    completion = api.chat.completions.parse(
        model="smollm2",
        messages=ask("Tell me about Paris."),
        response_format=City,
        temperature=0,
        max_tokens=200,
    )
    parsed = completion.choices[0].message.parsed
    assert isinstance(parsed, City) and parsed.name


def test_json_schema_strict_reply_is_valid_and_streams(api: openai.OpenAI) -> None:
    fmt: Any = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": PERSON, "strict": True},
    }
    whole = api.chat.completions.create(
        model="smollm2",
        messages=ask("Invent a person."),
        response_format=fmt,
        max_tokens=300,
        temperature=0,
    )
    assert whole.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(whole.choices[0].message.content or ""), PERSON)
    chunks = list(
        api.chat.completions.create(
            model="smollm2",
            messages=ask("Invent another person."),
            response_format=fmt,
            max_tokens=300,
            temperature=0,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed
    jsonschema.validate(json.loads(text), PERSON)


def test_json_object_with_the_async_client(daemon: DaemonProcess) -> None:
    async def main() -> str:
        async with openai.AsyncOpenAI(
            base_url=daemon.http_url + "/v1", api_key="x", max_retries=0
        ) as client:
            reply = await client.chat.completions.create(
                model="smollm2",
                messages=ask("Give a JSON object with a key 'colour'."),
                response_format={"type": "json_object"},
                max_tokens=300,
                temperature=0,
            )
            assert reply.choices[0].finish_reason in ("stop", "length")
            return reply.choices[0].message.content or ""

    text = asyncio.run(main())
    if text.rstrip().endswith("}"):
        assert isinstance(json.loads(text), dict)


def test_named_tool_choice_forces_that_call(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(
        model="smollm2",
        messages=ask("Hello there!"),  # nothing here asks for the weather
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    args = json.loads(call.function.arguments)  # type: ignore[union-attr]
    jsonschema.validate(args, WEATHER["function"]["parameters"])  # type: ignore[index]


def test_required_tool_choice_streams_a_call(api: openai.OpenAI) -> None:
    chunks = list(
        api.chat.completions.create(
            model="smollm2",
            messages=ask("What time is it in Tokyo?"),
            tools=[WEATHER, TIME],
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=200,
            temperature=0,  # a sampled argument may run long; greedy ends in a call
            stream=True,
        )
    )
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time")  # type: ignore[union-attr]
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["tool_calls"]


def test_tool_choice_none_never_calls(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(
        model="smollm2",
        messages=ask("What is the weather in Paris?"),
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=40,
        temperature=0,
    )
    assert not reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_nulls_from_the_client_mean_not_set(api: openai.OpenAI) -> None:
    reply = api.chat.completions.create(
        model="smollm2",
        messages=ask("Say hi"),
        max_completion_tokens=4,
        temperature=None,
        top_p=None,
        n=None,
        presence_penalty=None,
        frequency_penalty=None,
        seed=7,
        user="someone",
        metadata={"k": "v"},
        stream_options=None,
    )
    assert reply.usage is not None and reply.usage.completion_tokens <= 4
