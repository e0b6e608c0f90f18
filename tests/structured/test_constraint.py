"""Structured replies without a model: what the grammar compiler accepts and refuses,
the checks every reply passes, and the tool-choice forms."""

from __future__ import annotations

import json

import pytest
from rkllmd import errors as e
from rkllmd.requests import ChatMessage, GenerateRequest
from rkllmd.structured import (
    JsonReply,
    constrain,
    json_schema_reply,
    response_format,
    retry_request,
    tool_choice,
)
from rkllmd.structured.gbnf import json_literal, literal, schema_grammar, tool_call_grammar

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 8},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2},
    },
    "required": ["name"],
    "$defs": {"tag": {"enum": ["a", "b"]}},
}


def test_literals_escape_what_gbnf_needs() -> None:
    assert literal('say "hi"\\\n') == '"say \\"hi\\"\\\\\\n"'
    assert json_literal("x") == '"\\"x\\""'


def test_schema_grammar_has_each_property_and_bounded_whitespace() -> None:
    grammar = schema_grammar(PERSON)
    assert grammar.startswith("root ::= ")
    for name in ("name", "age", "tags"):
        assert f'"\\"{name}\\""' in grammar
    assert 'ws ::= | " " | "\\n" [ \\t]{0,16}' in grammar
    assert "( char ){0,8}" in grammar  # maxLength
    assert '( "\\"a\\"" | "\\"b\\"" )' in grammar  # the enum behind the $ref


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"not": {"type": "string"}}, "not"),
        ({"type": "object", "if": {}, "then": {}}, "if"),
        ({"$ref": "other.json#/x"}, "$ref"),
        ({"allOf": [{"type": "string"}, {"minLength": 2}]}, "allOf"),
        ({"type": "object", "properties": {"x": {"minProperties": 1}}}, "minProperties"),
    ],
)
def test_unsupported_keywords_are_named(schema: dict, keyword: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(e.UnsupportedSchema) as refused:
        schema_grammar(schema)
    assert keyword in refused.value.message


def test_tool_call_grammar_names_each_function() -> None:
    grammar = tool_call_grammar([("get_time", {"type": "object"}), ("f", None)], parallel=True)
    assert '"<tool_call>"' in grammar and "get_time" in grammar and "{0,7}" in grammar
    single = tool_call_grammar([("f", None)], parallel=False)
    assert "{0,7}" not in single


def test_json_checks() -> None:
    any_object = JsonReply()
    assert any_object.problem('{"a": 1}') is None
    assert "not a JSON object" in (any_object.problem("[1]") or "")
    assert "not valid JSON" in (any_object.problem('{"a": ') or "")
    person = json_schema_reply(PERSON, "schema")
    assert person.problem('{"name": "Ada", "age": 3, "tags": ["a"]}') is None
    assert "minimum" in (person.problem('{"name": "Ada", "age": -1}') or "")
    assert "name" in (person.problem('{"age": 1}') or "")


def test_response_format_forms() -> None:
    assert response_format(None) is None and response_format({"type": "text"}) is None
    assert response_format({"type": "json_object"}) == JsonReply()
    nested = response_format(
        {"type": "json_schema", "json_schema": {"name": "p", "schema": PERSON}}
    )
    flat = response_format({"type": "json_schema", "name": "p", "schema": PERSON}, "text.format")
    assert nested == flat and nested is not None and nested.schema == PERSON
    for bad in ({"type": "xml"}, {"type": "json_schema", "json_schema": {}}, "json"):
        with pytest.raises(e.InvalidParams):
            response_format(bad)
    with pytest.raises(e.InvalidParams):  # not a JSON Schema at all
        json_schema_reply({"type": 12}, "schema")


WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
CLOCK = {"type": "function", "function": {"name": "clock"}}


def test_tool_choice_forms() -> None:
    auto = tool_choice([WEATHER], "auto", None)
    assert auto.tools == (WEATHER,) and auto.constraint is None and not auto.single
    assert tool_choice([WEATHER], "none", None).tools == ()
    required = tool_choice([WEATHER, CLOCK], "required", False)
    assert required.constraint is not None and not required.constraint.parallel and required.single
    named = tool_choice([WEATHER, CLOCK], {"type": "function", "function": {"name": "clock"}}, None)
    assert named.constraint is not None and [t.name for t in named.constraint.tools] == ["clock"]
    flat = tool_choice(
        [{"type": "function", "name": "clock"}], {"type": "function", "name": "clock"}, None
    )
    assert flat.constraint is not None
    for tools, choice in (
        ([], "required"),
        ([WEATHER], {"type": "function", "function": {"name": "x"}}),
        ([WEATHER], "sometimes"),
    ):
        with pytest.raises(e.InvalidParams):
            tool_choice(tools, choice, None)


def test_tool_call_checks() -> None:
    forced = tool_choice([WEATHER, CLOCK], "required", False).constraint
    assert forced is not None
    call = '<tool_call>{"name": "weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert forced.problem(call) is None
    assert "no function" in (forced.problem("It is sunny.") or "")
    assert "city" in (forced.problem(call.replace("city", "town")) or "")
    assert "more than one" in (forced.problem(call + call) or "")
    assert "not a function" in (forced.problem(call.replace('"weather"', '"rain"')) or "")


def test_constrain_instructs_chats_and_retries_tell_the_failure() -> None:
    chat = GenerateRequest(messages=(ChatMessage("system", "Be brief."), ChatMessage("user", "Hi")))
    constrained = constrain(chat, JsonReply())
    assert constrained.sampling.grammar and constrained.messages[0].content.startswith("Be brief.")
    assert "JSON object" in constrained.messages[0].content and len(constrained.messages) == 2
    bare = constrain(GenerateRequest(messages=(ChatMessage("user", "Hi"),)), JsonReply())
    assert bare.messages[0].role == "system"
    again = retry_request(constrained, "nope", "the reply is not valid JSON", 1)
    assert [m.role for m in again.messages][-2:] == ["assistant", "user"]
    assert "not valid JSON" in again.messages[-1].content and again.sampling.seed == 1
    raw = constrain(GenerateRequest(prompt="{"), JsonReply())
    assert raw.messages == () and raw.sampling.grammar
    assert json.loads(json.dumps(raw.sampling.grammar))  # a plain string crosses the pipe
