"""The aiohttp application: one route table, one error middleware.

The same table generates the OpenAPI document, so the docs cannot drift from
the routes that exist.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from .. import errors as e
from . import downloads, manage, openai, ops
from . import schemas as s
from .edge import HostRules, check_auth, check_origin, cors_headers, to_error_response
from .services import SERVICES, Services

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HOST_RULES = web.AppKey("host_rules", HostRules)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    admin: bool = False


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", ops.health, "200 when serving, 503 while loading or failed"),
    Route("GET", "/v1/health", ops.health, "Same as /health"),
    Route("GET", "/metrics", ops.metrics, "Prometheus metrics"),
    Route("GET", "/v1/models", openai.list_models, "OpenAI model list (?type=chat filters)"),
    Route("GET", "/v1/models/available", manage.rk_available, "RockchipLlama: models on disk"),
    Route("GET", "/v1/models/loaded", manage.rk_loaded, "RockchipLlama: the loaded model"),
    Route(
        "POST",
        "/v1/models/load",
        manage.rk_load,
        "RockchipLlama: load a model",
        s.RockchipLoadRequest,
        True,
    ),
    Route("POST", "/v1/models/unload", manage.rk_unload, "RockchipLlama: unload", None, True),
    Route(
        "POST",
        "/v1/models/download",
        downloads.download_stream,
        "Pull a model from the Hub with SSE progress",
        s.DownloadRequest,
        True,
    ),
    Route(
        "POST",
        "/v1/download",
        downloads.download,
        "TabbyAPI: pull a model from the Hub",
        s.DownloadRequest,
        True,
    ),
    Route("GET", "/v1/models/{model_id:.+}", openai.get_model, "OpenAI: one model"),
    Route(
        "POST",
        "/v1/chat/completions",
        openai.chat_completions,
        "OpenAI chat (JSON or SSE)",
        s.ChatCompletionRequest,
    ),
    Route(
        "POST", "/v1/completions", openai.completions, "OpenAI text completion", s.CompletionRequest
    ),
    Route("POST", "/v1/embeddings", openai.embeddings, "OpenAI embeddings", s.EmbeddingRequest),
    Route("GET", "/v1/model", manage.tabby_current, "TabbyAPI: the loaded model's card"),
    Route("GET", "/v1/model/list", manage.tabby_list, "TabbyAPI: model cards"),
    Route(
        "GET",
        "/v1/model/props",
        manage.tabby_props,
        "Loaded model properties: template, context, slots",
    ),
    Route(
        "POST",
        "/v1/model/load",
        manage.tabby_load,
        "TabbyAPI: load with SSE progress",
        s.TabbyLoadRequest,
        True,
    ),
    Route("POST", "/v1/model/unload", manage.tabby_unload, "TabbyAPI: unload", None, True),
    Route(
        "GET",
        "/v1/model/embedding/list",
        manage.embedding_list,
        "TabbyAPI: embedding-capable models",
    ),
    Route(
        "POST",
        "/v1/model/embedding/load",
        manage.tabby_load,
        "TabbyAPI: load an embedding model",
        s.TabbyLoadRequest,
        True,
    ),
    Route(
        "POST", "/v1/model/embedding/unload", manage.tabby_unload, "TabbyAPI: unload", None, True
    ),
    Route("POST", "/chat", manage.simple_chat, "Simple chat: whole answer", s.SimpleChatRequest),
    Route(
        "POST",
        "/chat/stream",
        manage.simple_chat,
        "Simple chat: NDJSON fragments",
        s.SimpleChatRequest,
    ),
)


def openapi(routes: tuple[Route, ...]) -> dict[str, Any]:
    bodies = sorted({r.body for r in routes if r.body is not None}, key=lambda m: m.__name__)
    _, defs = models_json_schema(
        [(m, "validation") for m in bodies], ref_template="#/components/schemas/{model}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {"summary": route.summary, "responses": _responses()}
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
        paths.setdefault(path, {})[route.method.lower()] = op
    paths["/openapi.json"] = {"get": {"summary": "This document", "responses": _responses()}}
    paths["/docs"] = {"get": {"summary": "Human-readable API reference", "responses": _responses()}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "rkllmd HTTP API", "version": __version__},
        "paths": paths,
        "components": {"schemas": {**defs.get("$defs", {}), "Error": _ERROR_SCHEMA}},
    }


_ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string"},
            },
            "required": ["message", "type", "code"],
        }
    },
}


def _responses() -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        "200": {"description": "OK"},
        "4XX": {"description": "Client error", **error},
        "5XX": {"description": "Server error", **error},
    }


def _route_key(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    svc = request.app[SERVICES]
    http = svc.config().http
    admin = bool(getattr(handler, "rkllmd_admin", False))
    try:
        if not request.app[HOST_RULES].allows(request.headers.get("Host"), http):
            raise e.Forbidden("this Host header is not allowed (DNS rebinding protection)")
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(
                status=204 if cors_headers(request, http) else 403
            )
        else:
            check_origin(request, http)
            check_auth(request, http, admin)
            response = await handler(request)
    except e.RkllmdError as exc:
        response = to_error_response(exc)
    except web.HTTPNotFound:
        response = to_error_response(
            e.RouteNotFound(f"no route for {request.method} {request.path}")
        )
    except web.HTTPMethodNotAllowed as exc:
        response = to_error_response(
            e.MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        )
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except web.HTTPRequestEntityTooLarge:
        response = to_error_response(
            e.PayloadTooLarge(f"request bodies are limited to {http.max_body_bytes} bytes")
        )
    except (ConnectionError, web.HTTPException):
        raise
    except Exception:
        logger.exception("internal error on %s %s", request.method, request.path)
        response = to_error_response(e.RkllmdError("internal error"))
    if not response.prepared:
        response.headers.update(cors_headers(request, http))
    svc.manager.metrics.requests.labels(_route_key(request), str(response.status)).inc()
    return response


def _mark_admin(handler: Handler) -> Handler:
    async def admin_handler(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    admin_handler.rkllmd_admin = True  # type: ignore[attr-defined]
    return admin_handler


def build_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[edge_middleware], client_max_size=services.config().http.max_body_bytes
    )
    app[SERVICES] = services
    app[HOST_RULES] = HostRules(services.config().http)
    spec = openapi(ROUTES)
    page = ops.docs_page(spec)
    for route in ROUTES:
        handler = _mark_admin(route.handler) if route.admin else route.handler
        app.router.add_route(route.method, route.path, handler)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    return app
