"""TabbyAPI's embedding-model routes (``/v1/model/embedding/*`` and the Go client's
``/v1/models/embedding*``)."""

from __future__ import annotations

from aiohttp import web

from ...routing import Route
from ...services import services
from . import shapes
from .models import is_admin


async def list_embedding(request: web.Request) -> web.Response:
    """Models that can embed: sidecar type ``embedding``, and chat models (mean-pooled)."""
    views = [
        v
        for v in services(request).manager.list_models()
        if (v.entry.meta.type or "chat") in ("embedding", "chat")
    ]
    if not is_admin(request):
        views = [v for v in views if v.loaded]
    return web.json_response(shapes.model_list([shapes.card(v) for v in views]))


ROUTES = (
    Route("GET", "/v1/model/embedding/list", list_embedding, "TabbyAPI: embedding models"),
    Route("GET", "/v1/models/embedding", list_embedding, "TabbyAPI (Go client): embedding models"),
)
