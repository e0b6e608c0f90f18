"""Structured replies on the NPU, which cannot constrain sampling: the instruction in the
prompt, a check of each reply, regenerations told what was wrong, and
``structured_output_failed`` with the last attempt. The C double scripts the replies
(``[[say:...]]``, with ``\\[``/``\\]`` escapes for directives inside a reply)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "rank": {"type": "integer", "minimum": 1}},
    "required": ["city", "rank"],
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}}


def _client(daemon) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0)


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_valid_reply_passes_at_once_with_the_schema_in_the_prompt(
    npu_daemon: NpuDaemon, call_log: CallLog
) -> None:
    daemon = npu_daemon()
    mark = call_log.mark()
    with _client(daemon) as client:
        reply = client.chat.completions.create(
            model=MODEL_ID,
            messages=_ask('A city? [[say:{"city": "Oslo", "rank": 3}]]'),
            response_format=FORMAT,  # type: ignore[arg-type]
        )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Oslo", "rank": 3}
    runs = [c for c in call_log.since(mark) if c.get("fn") == "rkllm_run"]
    assert len(runs) == 1
    assert '"rank"' in runs[0]["input"]  # the schema went into the prompt


def test_an_invalid_reply_is_regenerated_with_the_failure_told(
    npu_daemon: NpuDaemon, call_log: CallLog
) -> None:
    daemon = npu_daemon()
    # The first reply is JSON with a string for the rank; the failure told to the model
    # quotes that string, which scripts the second, valid reply.
    script = r'[[say:{"city": "Oslo", "rank": "\[\[say:{\"city\": \"Rome\", \"rank\": 2}\]\]"}]]'
    mark = call_log.mark()
    with _client(daemon) as client:
        reply = client.chat.completions.create(
            model=MODEL_ID,
            messages=_ask(script),
            response_format=FORMAT,
            stream=True,  # type: ignore[arg-type]
        )
        text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
    assert json.loads(text) == {"city": "Rome", "rank": 2}
    runs = [c for c in call_log.since(mark) if c.get("fn") == "rkllm_run"]
    assert len(runs) == 2
    assert "not valid" in runs[1]["input"]  # the model was told what was wrong


@pytest.mark.parametrize("retries", [0, 2])
def test_structured_output_failed_after_the_retries(
    npu_daemon: NpuDaemon, call_log: CallLog, retries: int
) -> None:
    daemon = npu_daemon(env={"RKLLMD_STRUCTURED__RETRIES": str(retries)})
    mark = call_log.mark()
    with _client(daemon) as client, pytest.raises(openai.UnprocessableEntityError) as failed:
        client.chat.completions.create(
            model=MODEL_ID,
            messages=_ask('[[say:{"city": "Oslo", "rank": -5}]]'),  # valid JSON, not the schema
            response_format=FORMAT,  # type: ignore[arg-type]
        )
    error: Any = failed.value.body
    assert error["code"] == "structured_output_failed"
    assert error["details"]["attempts"] == retries + 1
    assert error["details"]["last_attempt"] == '{"city": "Oslo", "rank": -5}'
    assert "rank" in error["message"]
    runs = [c for c in call_log.since(mark) if c.get("fn") == "rkllm_run"]
    assert len(runs) == retries + 1


def test_a_forced_tool_call_is_checked_against_the_parameters(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env={"RKLLMD_STRUCTURED__RETRIES": "0"})
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    good = '<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
    bad = '<tool_call>\\n{"name": "get_weather", "arguments": {"town": "Paris"}}\\n</tool_call>'
    forced = {"type": "function", "function": {"name": "get_weather"}}
    with _client(daemon) as client:
        reply = client.chat.completions.create(
            model=MODEL_ID,
            messages=_ask(f"Weather? [[say:{good}]]"),
            tools=[weather],  # type: ignore[list-item]
            tool_choice=forced,  # type: ignore[arg-type]
        )
        (call,) = reply.choices[0].message.tool_calls or []
        assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.chat.completions.create(
                model=MODEL_ID,
                messages=_ask(f"Weather? [[say:{bad}]]"),
                tools=[weather],  # type: ignore[list-item]
                tool_choice=forced,  # type: ignore[arg-type]
            )
        assert "city" in str(refused.value)
