"""The OpenAPI document, generated from the route table so it cannot drift."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from .. import __version__
from . import schemas as s
from .routing import Route

REF_PREFIX = "#/components/schemas/"


def resolve_refs(node: Any, schemas: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """``node`` with every ``$ref`` to a component replaced by the component itself,
    for readers that do not follow references (the /docs page). A schema that
    contains itself keeps its ``$ref`` where it recurs."""
    if isinstance(node, list):
        return [resolve_refs(item, schemas, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        name = ref[len(REF_PREFIX) :]
        if name in schemas and name not in seen:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return resolve_refs({**schemas[name], **rest}, schemas, seen | {name})
        return node
    return {key: resolve_refs(value, schemas, seen) for key, value in node.items()}


def openapi(routes: tuple[Route, ...]) -> dict[str, Any]:
    bodies = sorted({r.body for r in routes if r.body is not None}, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        errors = "OllamaError" if route.path.startswith("/api/") else "Error"
        op: dict[str, Any] = {"summary": route.summary, "responses": _responses(errors)}
        if route.body is not None:
            ref = {"$ref": f"#/components/schemas/{route.body.__name__}"}
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref}}}
        path = route.path.replace("{model_id:.+}", "{model_id}")
        if "{model_id}" in path:
            op["parameters"] = [
                {
                    "name": "model_id",
                    "in": "path",
                    "required": True,
                    "schema": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "pattern": s.MODEL_NAME_PATTERN,
                    },
                }
            ]
        if "{response_id}" in path:
            op["parameters"] = [
                {
                    "name": "response_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                }
            ]
        paths.setdefault(path, {})[route.method.lower()] = op
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": _responses()}}
    paths["/docs"] = {"get": {"summary": "Human-readable API reference", "responses": _responses()}}
    for page in ("/", "/ui/"):
        paths[page] = {
            "get": {"summary": "The web console (docs/console.md)", "responses": _responses()}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": "rkllmd HTTP API", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {
                **defs.get("$defs", {}),
                "Error": _ERROR_SCHEMA,
                "OllamaError": _OLLAMA_ERROR_SCHEMA,
            }
        },
    }


_ERROR_SCHEMA = {
    "type": "object",
    "description": (
        "OpenAI's {error: {message, type, param, code}}; the simple chat dialect answers "
        "{detail, code} and a failed /models/load {loaded: false, error: message, code}"
    ),
    "properties": {
        "error": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": "string"},
                    },
                    "required": ["message", "type", "code"],
                },
                {"type": "string"},
            ]
        },
        "detail": {"type": "string"},
        "code": {"type": "string"},
    },
}


# Ollama's error body (/api/...): the message, and our stable code beside it.
_OLLAMA_ERROR_SCHEMA = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "code": {"type": "string"}},
    "required": ["error"],
}


def _responses(errors: str = "Error") -> dict[str, Any]:
    schema = {"$ref": f"#/components/schemas/{errors}"}
    error = {"content": {"application/json": {"schema": schema}}}
    return {
        "200": {"description": "OK"},
        "4XX": {"description": "Client error", **error},
        "5XX": {"description": "Server error", **error},
    }
