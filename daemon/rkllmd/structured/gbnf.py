"""JSON Schema to GBNF: the grammar llama.cpp's sampler follows so that a reply can
only be JSON of the requested shape.

The grammar enforces structure: ``type`` (one or a list), ``properties`` in their
declared order with ``required`` ones always present, ``items``/``prefixItems`` with
``minItems``/``maxItems``, ``enum``, ``const``, ``anyOf``/``oneOf``, a one-element
``allOf``, local ``$ref`` (recursion included) and string ``minLength``/``maxLength``.
Only declared properties are generated, which every ``additionalProperties`` allows.

Value constraints a grammar cannot express compactly (``minimum``, ``maximum``,
``multipleOf``, ``pattern``, ``format``, ``uniqueItems``, ``oneOf``'s exclusivity)
are left to validating the reply afterwards. Keywords neither can honour are refused
with ``UnsupportedSchema`` naming the keyword and where it is: never a silent
fallback to an unconstrained reply.

Whitespace is bounded (at most a newline and 16 blanks between tokens), numbers have
at most 16 digits per part: a small model cannot fill ``max_tokens`` with blanks or
digits inside an otherwise finished object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import InvalidParams, UnsupportedSchema

# Shared rules, referenced by name from compiled schemas.
BASE_RULES = {
    "ws": '| " " | "\\n" [ \\t]{0,16}',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"',
    "array": '"[" ws ( value ws ( "," ws value ws )* )? "]"',
    "string": '"\\"" char* "\\""',
    "char": '[^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ( ["\\\\/bfnrt] | "u" [0-9a-fA-F]{4} )',
    "integral": '"0" | [1-9] [0-9]{0,15}',
    "integer": '"-"? integral',
    "number": '"-"? integral ( "." [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,3} )?',
    "boolean": '"true" | "false"',
    "null": '"null"',
}

# Keywords that neither the grammar nor the validation after it can be trusted with.
REFUSED = (
    "not",
    "if",
    "then",
    "else",
    "patternProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "minContains",
    "maxContains",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "$dynamicRef",
    "$recursiveRef",
)
TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
# Above this, a repetition count is left to validation instead of unrolled in the grammar.
MAX_UNROLLED = 64


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def json_literal(value: Any) -> str:
    """A JSON value, compactly encoded, as the GBNF literal that matches exactly it."""
    return literal(json.dumps(value, ensure_ascii=False, separators=(", ", ": ")))


class Compiler:
    """Turns schemas into GBNF rules; ``grammar(root)`` renders the whole grammar."""

    def __init__(self, document: Any) -> None:
        self.document = document  # what local $refs point into
        self._rules: dict[str, str] = {}
        self._by_body: dict[str, str] = {}
        self._refs: dict[tuple[int, str], str] = {}

    def grammar(self, root: str) -> str:
        rules = {"root": root, **self._rules, **BASE_RULES}
        return "\n".join(f"{name} ::= {body}" for name, body in rules.items()) + "\n"

    def rule(self, hint: str, body: str) -> str:
        """A named rule for ``body`` (one per distinct body)."""
        if body in self._by_body:
            return self._by_body[body]
        name = self._fresh(hint)
        self._rules[name] = body
        self._by_body[body] = name
        return name

    def _fresh(self, hint: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", hint.lower()).strip("-")[:40] or "r"
        name, n = f"s-{base}", 1
        while name in self._rules:
            n += 1
            name = f"s-{base}-{n}"
        return name

    # --- schemas -------------------------------------------------------------------

    def schema(self, schema: Any, where: str, hint: str = "value") -> str:
        """An expression matching exactly the JSON values valid against ``schema``."""
        if schema is True or schema == {}:
            return "value"
        if not isinstance(schema, dict):
            raise UnsupportedSchema(f"{where}: a schema must be an object or true", param=where)
        for keyword in REFUSED:
            if keyword in schema:
                raise UnsupportedSchema(
                    f"{where}: the JSON Schema keyword {keyword!r} is not supported",
                    param=where,
                    keyword=keyword,
                )
        if "$ref" in schema:
            return self._ref(schema["$ref"], where)
        if "const" in schema:
            return json_literal(schema["const"])
        if "enum" in schema:
            return self._enum(schema["enum"], where)
        for keyword in ("anyOf", "oneOf"):
            if keyword in schema:
                return self._alternatives(schema, keyword, where, hint)
        if "allOf" in schema:
            return self._all_of(schema, where, hint)
        kind = schema.get("type")
        if isinstance(kind, list):
            options = [self.schema({**schema, "type": t}, where, hint) for t in kind]
            return self.rule(hint, " | ".join(options))
        if kind is None:
            kind = _implied_type(schema)
        if kind is None:
            return "value"
        if kind not in TYPES:
            raise UnsupportedSchema(f"{where}: unknown type {kind!r}", param=where)
        return self._typed(kind, schema, where, hint)

    def _typed(self, kind: str, schema: dict[str, Any], where: str, hint: str) -> str:
        if kind == "object":
            return self._object(schema, where, hint)
        if kind == "array":
            return self._array(schema, where, hint)
        if kind == "string":
            return self._string(schema, where, hint)
        return kind  # number, integer, boolean, null: the shared rules

    def _ref(self, ref: Any, where: str) -> str:
        if not isinstance(ref, str) or not (ref == "#" or ref.startswith("#/")):
            raise UnsupportedSchema(
                f"{where}: only local $ref (#/...) is supported", param=where, keyword="$ref"
            )
        key = (id(self.document), ref)
        if key not in self._refs:
            name = self._fresh(ref.rsplit("/", 1)[-1] or "root")
            self._refs[key] = name
            self._rules[name] = "value"  # placeholder: the target may refer to itself
            body = self.schema(_resolve(self.document, ref, where), ref, name)
            self._rules[name] = body
        return self._refs[key]

    def _enum(self, values: Any, where: str) -> str:
        if not isinstance(values, list) or not values:
            raise InvalidParams(f"{where}: enum must be a non-empty list", param=where)
        return "( " + " | ".join(json_literal(v) for v in values) + " )"

    def _alternatives(self, schema: dict[str, Any], keyword: str, where: str, hint: str) -> str:
        options = schema[keyword]
        if not isinstance(options, list) or not options:
            raise InvalidParams(f"{where}: {keyword} must be a non-empty list", param=where)
        rest = {k: v for k, v in schema.items() if k != keyword}
        branches = [
            self.schema({**rest, **branch} if isinstance(branch, dict) else branch, where, hint)
            for branch in options
        ]
        return self.rule(hint, " | ".join(branches))

    def _all_of(self, schema: dict[str, Any], where: str, hint: str) -> str:
        parts = schema["allOf"]
        if not isinstance(parts, list) or len(parts) != 1 or not isinstance(parts[0], dict):
            raise UnsupportedSchema(
                f"{where}: allOf is supported with exactly one schema", param=where, keyword="allOf"
            )
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        if set(rest) - ANNOTATIONS:
            raise UnsupportedSchema(
                f"{where}: allOf next to other constraints is not supported",
                param=where,
                keyword="allOf",
            )
        return self.schema(parts[0], where, hint)

    def _object(self, schema: dict[str, Any], where: str, hint: str) -> str:
        properties = schema.get("properties") or {}
        if not isinstance(properties, dict):
            raise InvalidParams(f"{where}: properties must be an object", param=where)
        required = set(schema.get("required") or ())
        missing = required - set(properties)
        if missing:
            # Nothing tells the grammar what such a property holds.
            raise UnsupportedSchema(
                f"{where}: required property {sorted(missing)[0]!r} is not in properties",
                param=where,
            )
        if not properties:
            extra = schema.get("additionalProperties", True)
            if extra is False:
                return literal("{") + " ws " + literal("}")
            value = self.schema(extra, f"{where}.additionalProperties", hint + "-value")
            pair = f'string ws ":" ws {value} ws'
            return self.rule(hint, f'"{{" ws ( {pair} ( "," ws {pair} )* )? "}}"')
        members = [
            (name in required, self._member(name, sub, f"{where}.{name}", f"{hint}-{name}"))
            for name, sub in properties.items()
        ]
        return self.rule(hint, f'"{{" ws {self._members(members, hint)} "}}"')

    def _member(self, name: str, schema: Any, where: str, hint: str) -> str:
        value = self.schema(schema, where, hint)
        return f'{json_literal(name)} ws ":" ws {value} ws'

    def _members(self, members: Sequence[tuple[bool, str]], hint: str) -> str:
        """Members in declared order; optional ones may be left out, commas stay right.

        ``after[i]`` continues once something was written (each member needs a comma);
        ``first[i]`` starts where nothing was written yet.
        """
        after = ""
        first = ""
        for required, member in reversed(members):
            tail = f'"," ws {member} {after}'.strip()
            start = f"{member} {after}".strip()
            if required:
                after = self.rule(hint + "-rest", tail)
                first = self.rule(hint + "-first", start)
            else:
                after = self.rule(
                    hint + "-rest", f"( {tail} )?" if not after else f"( {tail} | {after} )"
                )
                first = self.rule(
                    hint + "-first", f"{start} | {first}" if first else f"( {start} )?"
                )
        return first

    def _array(self, schema: dict[str, Any], where: str, hint: str) -> str:
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            if schema.get("items", False) is not False:
                raise UnsupportedSchema(
                    f"{where}: prefixItems with further items is not supported", param=where
                )
            items = [self.schema(s, f"{where}[{i}]", f"{hint}-{i}") for i, s in enumerate(prefix)]
            inner = ' ws "," ws '.join(items)
            return self.rule(hint, f'"[" ws {inner} ws "]"')
        item = self.schema(schema.get("items", True), f"{where}[]", hint + "-item")
        low, high = _counts(schema, "minItems", "maxItems", where)
        if high == 0:
            return self.rule(hint, '"[" ws "]"')
        more = _repeat(f'"," ws {item} ws', max(low - 1, 0), None if high is None else high - 1)
        body = f"{item} ws {more}".strip()
        if low == 0:
            body = f"( {body} )?"
        return self.rule(hint, f'"[" ws {body} "]"')

    def _string(self, schema: dict[str, Any], where: str, hint: str) -> str:
        low, high = _counts(schema, "minLength", "maxLength", where)
        if low == 0 and high is None:
            return "string"
        return self.rule(hint, f'"\\"" {_repeat("char", low, high)} "\\""')


# Keywords that describe and never constrain.
ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "$schema",
        "$id",
        "$defs",
        "definitions",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


def _implied_type(schema: dict[str, Any]) -> str | None:
    if "properties" in schema or "additionalProperties" in schema or "required" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return None


def _counts(
    schema: dict[str, Any], low_key: str, high_key: str, where: str
) -> tuple[int, int | None]:
    low, high = schema.get(low_key, 0), schema.get(high_key)
    for key, value in ((low_key, low), (high_key, high)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < 0
        ):
            raise InvalidParams(f"{where}: {key} must be a non-negative integer", param=where)
    if high is not None and high < low:
        raise InvalidParams(f"{where}: {high_key} is below {low_key}", param=where)
    if low > MAX_UNROLLED:
        low = MAX_UNROLLED  # the rest is checked by validation
    if high is not None and high > MAX_UNROLLED:
        high = None
    return low, high


def _repeat(expr: str, low: int, high: int | None) -> str:
    if high is None:
        return f"( {expr} ){{{low},}}" if low else f"( {expr} )*"
    if high == 0:
        return ""
    return f"( {expr} ){{{low},{high}}}"


def _resolve(document: Any, ref: str, where: str) -> Any:
    node = document
    for raw in ref[2:].split("/") if ref != "#" else ():
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            raise InvalidParams(f"{where}: $ref {ref!r} points nowhere", param=where)
    return node


def schema_grammar(schema: Any) -> str:
    """The grammar of replies valid against ``schema`` (structure; see the module doc)."""
    compiler = Compiler(schema)
    return compiler.grammar(compiler.schema(schema, "schema", "root"))


def json_object_grammar() -> str:
    """Any JSON object (OpenAI's ``json_object``, Ollama's ``format: "json"``)."""
    return Compiler({}).grammar("object")


def tool_call_grammar(tools: Iterable[tuple[str, Any]], *, parallel: bool) -> str:
    """Calls in the ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` form the
    reply parser reads, to one of ``tools`` (name, parameters schema); with ``parallel``
    up to eight calls in a row, else exactly one."""
    compiler = Compiler({})
    calls = []
    for name, parameters in tools:
        compiler.document = parameters  # each tool's $refs point into its own schema
        args = compiler.schema(parameters or {"type": "object"}, f"tools.{name}", name + "-args")
        calls.append(
            f'"{{" ws {json_literal("name")} ws ":" ws {json_literal(name)} ws "," ws '
            f'{json_literal("arguments")} ws ":" ws {args} ws "}}"'
        )
    call = compiler.rule("call", " | ".join(calls))
    block = compiler.rule("block", f'"<tool_call>" ws {call} ws "</tool_call>"')
    root = f"{block} ( ws {block} ){{0,7}}" if parallel else block
    return compiler.grammar(root)
