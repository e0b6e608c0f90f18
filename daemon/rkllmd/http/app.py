"""The aiohttp application: every dialect's route table, one edge middleware.

The same table generates the OpenAPI document, so the docs cannot drift from
the routes that exist.
"""

from __future__ import annotations

import logging

from aiohttp import web

from .. import errors as e
from . import ops, pulls, removal, state
from .cards import CARD_CACHE, CardCache
from .dialects import (
    ollama,
    ollama_models,
    openai,
    openai_embeddings,
    responses,
    rockchip,
    simplechat,
    tabby,
)
from .edge import HostRules, check_auth, check_origin, cors_headers, to_error_response
from .openapi import openapi
from .routing import Handler, Route
from .services import SERVICES, Services
from .streaming import say_unresolved
from .ui import add_console

logger = logging.getLogger(__name__)

HOST_RULES = web.AppKey("host_rules", HostRules)

# Order matters where paths overlap: OpenAI's /v1/models/{model_id} comes after the
# fixed /v1/models/... paths of the management dialects.
ROUTES: tuple[Route, ...] = (
    *ops.ROUTES,
    *state.ROUTES,
    *rockchip.ROUTES,
    *pulls.ROUTES,
    *tabby.ROUTES,
    *simplechat.ROUTES,
    *openai.ROUTES,
    *openai_embeddings.ROUTES,
    *removal.ROUTES,
    *responses.ROUTES,
    *ollama_models.ROUTES,
    *ollama.ROUTES,
)


def _route_key(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    svc = request.app[SERVICES]
    http = svc.config.current.http
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
            if not getattr(handler, "rkllmd_public", False):  # the console's static files
                check_auth(request, http, admin)
            response = await handler(request)
    except e.RkllmdError as exc:
        response = to_error_response(exc, request.path)
    except web.HTTPNotFound:
        response = to_error_response(
            e.RouteNotFound(f"no route for {request.method} {request.path}"), request.path
        )
    except web.HTTPMethodNotAllowed as exc:
        response = to_error_response(
            e.MethodNotAllowed(f"{request.method} is not allowed on {request.path}"), request.path
        )
        response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except web.HTTPRequestEntityTooLarge:
        response = to_error_response(
            e.PayloadTooLarge(f"request bodies are limited to {http.max_body_bytes} bytes"),
            request.path,
        )
    except (ConnectionError, web.HTTPException):
        raise
    except Exception:
        logger.exception("internal error on %s %s", request.method, request.path)
        response = to_error_response(e.RkllmdError("internal error"), request.path)
    if not response.prepared:
        response.headers.update(cors_headers(request, http))
    svc.manager.metrics.requests.labels(_route_key(request), str(response.status)).inc()
    return response


def _mark_admin(handler: Handler) -> Handler:
    async def admin_handler(request: web.Request) -> web.StreamResponse:
        return await handler(request)

    admin_handler.rkllmd_admin = True  # type: ignore[attr-defined]
    return admin_handler


def _not_allowed(allowed: set[str]) -> Handler:
    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))

    return refuse


def _add_routes(router: web.UrlDispatcher, routes: tuple[Route, ...]) -> None:
    """Every route, in order. A pattern such as ``GET /v1/models/{model_id}`` would also
    take the fixed paths before it that lack its method (``GET /v1/models/load``): those
    answer 405 with their Allow header instead, as their own method list says."""
    fixed: dict[str, set[str]] = {}
    for route in routes:
        if "{" in route.path:
            prefix = route.path.split("{", 1)[0]
            for path, methods in fixed.items():
                if path.startswith(prefix) and path != prefix and route.method not in methods:
                    router.add_route(route.method, path, _not_allowed(set(methods)))
        else:
            fixed.setdefault(route.path, set()).add(route.method)
        handler = _mark_admin(route.handler) if route.admin else route.handler
        router.add_route(route.method, route.path, handler)


def build_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[edge_middleware], client_max_size=services.config.current.http.max_body_bytes
    )
    app[SERVICES] = services
    app[HOST_RULES] = HostRules(services.config.current.http)
    app[CARD_CACHE] = CardCache()
    app.on_response_prepare.append(say_unresolved)
    spec = openapi(ROUTES)
    page = ops.docs_page(spec)
    _add_routes(app.router, ROUTES)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.json_response(spec)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html")

    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs)
    add_console(app.router)
    return app
