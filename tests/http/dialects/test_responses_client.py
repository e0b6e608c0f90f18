"""The Responses API through the official openai client (sync and async) against a
real daemon and SmolLM2."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from tests.helpers import MODEL_ID, DaemonProcess

pytestmark = pytest.mark.real_model

WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
def api(shared_daemon: DaemonProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=shared_daemon.http_url + "/v1", api_key="x", max_retries=0
    ) as client:
        yield client


def test_text_answer_usage_and_retrieval(api: openai.OpenAI) -> None:
    response = api.responses.create(
        model="smollm2",
        input="Say hello",
        instructions="Be brief.",
        max_output_tokens=8,
        extra_body={"ignore_eos": True},  # the limit, not the model, ends it
    )
    assert response.object == "response" and response.model == MODEL_ID
    assert response.status == "incomplete"  # cut by max_output_tokens
    assert response.incomplete_details and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text
    assert response.usage and response.usage.output_tokens == 8
    assert response.usage.total_tokens == response.usage.input_tokens + 8
    again = api.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == response.output_text
    api.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(response.id)


def test_streamed_events(api: openai.OpenAI) -> None:
    events = list(
        api.responses.create(
            model="smollm2",
            input="Say hello",
            max_output_tokens=12,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == "".join(deltas)
    final = events[-1].response  # type: ignore[union-attr]
    assert final.output_text == done.text and final.usage is not None


def test_previous_response_id_continues_the_conversation(api: openai.OpenAI) -> None:
    first = api.responses.create(
        model="smollm2", input="My name is Ada.", max_output_tokens=10, temperature=0
    )
    second = api.responses.create(
        model="smollm2",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=10,
        temperature=0,
    )
    # The second prompt holds the first turn and its answer.
    assert second.usage and first.usage
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    with pytest.raises(openai.NotFoundError):
        api.responses.create(model="smollm2", input="hi", previous_response_id="resp_missing")
    unstored = api.responses.create(model="smollm2", input="hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        api.responses.retrieve(unstored.id)


def test_function_tool_round_trip(api: openai.OpenAI) -> None:
    first = api.responses.create(
        model="smollm2",
        input="What is the weather in Paris?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), WEATHER["parameters"])
    second = api.responses.create(
        model="smollm2",
        previous_response_id=first.id,
        input=[
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 24 C"}
        ],
        tools=[WEATHER],
        max_output_tokens=30,
    )
    assert second.status in ("completed", "incomplete") and second.output


def test_streamed_function_call_events(api: openai.OpenAI) -> None:
    events = list(
        api.responses.create(
            model="smollm2",
            input="Weather in Rome?",
            tools=[WEATHER],
            tool_choice="required",
            temperature=0,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    jsonschema.validate(json.loads(done.arguments), WEATHER["parameters"])


def test_text_format_json_schema_with_the_async_client(shared_daemon: DaemonProcess) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number"}},
        "required": ["answer", "confidence"],
        "additionalProperties": False,
    }

    async def main() -> str:
        async with openai.AsyncOpenAI(
            base_url=shared_daemon.http_url + "/v1", api_key="x", max_retries=0
        ) as client:
            response = await client.responses.create(
                model="smollm2",
                input="Is the sky blue?",
                text={
                    "format": {"type": "json_schema", "name": "a", "schema": schema, "strict": True}
                },
                max_output_tokens=300,
                temperature=0,  # a sampled string may run to the limit
            )
            assert response.status == "completed"
            return response.output_text

    jsonschema.validate(json.loads(asyncio.run(main())), schema)


def test_bad_requests_are_refused_by_name(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as hosted:
        api.responses.create(model="smollm2", input="hi", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert "tools.0.type" in str(hosted.value) and "'function'" in str(hosted.value)
    with pytest.raises(openai.BadRequestError) as unknown:
        api.responses.create(
            model="smollm2", input=[{"type": "computer_call_output", "call_id": "x"}]
        )  # type: ignore[list-item]
    assert "computer_call_output" in str(unknown.value)
