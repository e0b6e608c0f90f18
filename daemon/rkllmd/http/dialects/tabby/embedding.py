"""TabbyAPI's embedding-model routes (``/v1/model/embedding*`` and the Go client's
``/v1/models/embedding*``): the separate embedding model, a second resident model in
a worker of its own beside the chat model (``embedslot.py``)."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import ConfigDict, Field

from .... import errors as e
from ...edge import read_body
from ...routing import Route
from ...schemas import Body, ModelName
from ...services import services
from . import shapes
from .models import is_admin


class EmbeddingLoadRequest(Body):
    """TabbyAPI's EmbeddingModelLoadRequest."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    embedding_model_name: ModelName
    embeddings_device: Annotated[str, Field(max_length=64)] | None = None


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


async def current(request: web.Request) -> web.Response:
    resident = services(request).manager.status().embedding
    if resident is None:
        raise e.NoModelLoaded("no embedding model is loaded")
    return web.json_response(shapes.resident_card(resident))


async def load(request: web.Request) -> web.Response:
    svc = services(request)
    body = await read_body(request, EmbeddingLoadRequest, svc.config.current.http)
    notes = []
    if body.embeddings_device not in (None, "", "cpu", "auto"):
        notes.append(
            f"embeddings_device {body.embeddings_device} does not apply: "
            "the embedding model runs on the CPU"
        )
    status = await svc.manager.load_embedding(body.embedding_model_name)
    model = status.embedding.entry.id if status.embedding else None
    answer = shapes.load_progress("finished", 1, 1, "embedding_model", model=model, notes=notes)
    return web.json_response(answer)


async def unload(request: web.Request) -> web.Response:
    await services(request).manager.unload_embedding()
    return web.json_response({})


ROUTES = (
    Route("GET", "/v1/model/embedding/list", list_embedding, "TabbyAPI: embedding models"),
    Route("GET", "/v1/models/embedding", list_embedding, "TabbyAPI (Go client): embedding models"),
    Route("GET", "/v1/model/embedding", current, "TabbyAPI: the embedding model's card"),
    Route(
        "GET", "/v1/models/embedding/current", current, "TabbyAPI (Go client): the embedding model"
    ),
    Route(
        "POST",
        "/v1/model/embedding/load",
        load,
        "TabbyAPI: load the separate embedding model",
        EmbeddingLoadRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/models/embedding/load",
        load,
        "TabbyAPI (Go client): load the embedding model",
        EmbeddingLoadRequest,
        admin=True,
    ),
    Route(
        "POST",
        "/v1/model/embedding/unload",
        unload,
        "TabbyAPI: unload the embedding model",
        admin=True,
    ),
    Route(
        "DELETE",
        "/v1/models/embedding/current",
        unload,
        "TabbyAPI (Go client): unload the embedding model",
        admin=True,
    ),
)
