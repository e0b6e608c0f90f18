"""TabbyAPI's service routes: which key the request carries, and what this server is."""

from __future__ import annotations

from aiohttp import web

from .... import __version__
from ...edge import Access, key_access
from ...routing import Route
from ...services import services

SERVICE_INFO = {
    "version": 0.1,
    "software": {
        "name": "rkllmd",
        "version": __version__,
    },
    "api": {
        "openai": {"name": "OpenAI API", "relative_url": "/v1", "version": 1},
        "tabbyapi": {"name": "TabbyAPI model management", "relative_url": "/v1", "version": 1},
    },
}


async def permission(request: web.Request) -> web.Response:
    """Which key the request carries: ``admin`` or ``api`` (the edge refused no key)."""
    access = key_access(request, services(request).config.current.http)
    return web.json_response({"permission": "admin" if access is Access.ADMIN else "api"})


async def service_info(request: web.Request) -> web.Response:
    return web.json_response(SERVICE_INFO)


ROUTES = (
    Route("GET", "/v1/auth/permission", permission, "TabbyAPI: the permission of the key"),
    Route("GET", "/.well-known/serviceinfo", service_info, "What this server is and speaks"),
)
