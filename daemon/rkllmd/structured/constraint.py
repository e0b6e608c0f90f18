"""What a reply must be (JSON, JSON valid against a schema, or calls to given tools),
and the three ways rkllmd gets there, the same for every dialect:

* ``grammar``: GBNF for backends that constrain sampling (llama.cpp);
* ``instruction``: a system-prompt addition, for every backend (on the NPU, which has
  no constraint interface, it is what steers the model);
* ``problem``: the check every reply passes before it counts as valid. A reply that
  fails it is regenerated (``structured.retries``) with the failure told to the model,
  and after the last attempt the request fails with ``structured_output_failed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from ..chat.parse import OutputParser, ToolCall
from ..errors import InvalidParams
from .gbnf import json_object_grammar, schema_grammar, tool_call_grammar


def checked_schema(schema: Any, where: str) -> dict[str, Any]:
    """``schema`` if it is a well-formed JSON Schema (400 naming ``where`` if not)."""
    if not isinstance(schema, dict):
        raise InvalidParams(f"{where}: a JSON Schema object is expected", param=where)
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_errors.SchemaError as exc:
        raise InvalidParams(
            f"{where}: not a valid JSON Schema: {exc.message}", param=where
        ) from None
    return schema


def schema_problem(value: Any, schema: dict[str, Any]) -> str | None:
    """Why ``value`` is not valid against ``schema`` (None when it is)."""
    validator = validators.validator_for(schema)(schema)
    error = schema_errors.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "the top level"
    return f"at {where}: {error.message}"


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A JSON reply: any object (``schema`` None) or a value valid against ``schema``."""

    schema: dict[str, Any] | None = None
    name: str | None = None
    kind: Literal["json"] = "json"

    def grammar(self) -> str:
        return json_object_grammar() if self.schema is None else schema_grammar(self.schema)

    def instruction(self) -> str:
        if self.schema is None:
            return "Answer with one JSON object and nothing else: no prose, no code fences."
        text = json.dumps(self.schema, ensure_ascii=False)
        return (
            "Answer with JSON that conforms to this JSON Schema, and nothing else "
            f"(no prose, no code fences):\n{text}"
        )

    def problem(self, text: str) -> str | None:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            return f"the reply is not valid JSON ({exc.msg} at character {exc.pos})"
        if self.schema is None:
            return None if isinstance(value, dict) else "the reply is not a JSON object"
        return schema_problem(value, self.schema)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


@dataclass(frozen=True, slots=True)
class ToolCallReply:
    """A reply that calls one of ``tools`` (OpenAI ``tool_choice`` "required" or a named
    function): once, or several times when ``parallel``."""

    tools: tuple[Tool, ...]
    parallel: bool = True
    kind: Literal["tools"] = "tools"

    def grammar(self) -> str:
        return tool_call_grammar(
            ((t.name, t.parameters) for t in self.tools), parallel=self.parallel
        )

    def instruction(self) -> str:
        names = ", ".join(t.name for t in self.tools)
        which = f"the function {names}" if len(self.tools) == 1 else f"one of the functions {names}"
        return (
            f"You must call {which}. Answer only with the call, in this form:\n"
            '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as JSON>}}\n'
            "</tool_call>"
        )

    def problem(self, text: str) -> str | None:
        calls = _calls(text)
        if not calls:
            return "the reply calls no function"
        if not self.parallel and len(calls) > 1:
            return "the reply calls more than one function"
        allowed = {t.name: t for t in self.tools}
        for call in calls:
            tool = allowed.get(call.name)
            if tool is None:
                return f"{call.name!r} is not a function that may be called here"
            problem = schema_problem(json.loads(call.arguments), tool.parameters)
            if problem is not None:
                return f"the arguments of {call.name} are not valid {problem}"
        return None


Constraint = JsonReply | ToolCallReply


def _calls(text: str) -> list[ToolCall]:
    parser = OutputParser(reasoning=True, tools=True)
    parser.feed(text)
    return parser.finish()[1]


def tool_from_openai(spec: Any, where: str) -> Tool:
    """A ``{"type": "function", "function": {"name", "parameters"}}`` tool definition."""
    function = spec.get("function") if isinstance(spec, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise InvalidParams(f"{where}: a function tool needs function.name", param=where)
    parameters = function.get("parameters") or {"type": "object"}  # type: ignore[union-attr]
    return Tool(name, checked_schema(parameters, f"{where}.function.parameters"))
