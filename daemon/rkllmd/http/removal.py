"""Removing models over HTTP, with the guards of ``rkllmctl rm``.

``DELETE /v1/models/{id}`` answers OpenAI's delete shape (so ``client.models.delete``
works) plus the files that went; ``POST /v1/models/clean`` removes every model, as
``rkllmctl rm --all``. Both are management routes (the admin key when one is set).
Without ``force`` a loaded or pinned model, or one whose repository is being pulled,
is refused with 409; names go through the same resolution as everywhere, so nothing
outside the models directory can be named.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import StrictBool

from .. import errors as e
from ..store import ModelStore
from .edge import read_body
from .routing import Route
from .schemas import Body
from .services import services

_FLAGS = {"true": True, "1": True, "false": False, "0": False}


class CleanRequest(Body):
    force: StrictBool = False


def _store(request: web.Request) -> ModelStore:
    store = services(request).store
    if store is None:
        raise e.NotAvailable("removing models is not available in this daemon")
    return store


def _force(request: web.Request) -> bool:
    value = request.query.get("force", "false").lower()
    if value not in _FLAGS:
        raise e.InvalidParams("force must be true or false", param="force")
    return _FLAGS[value]


async def delete_model(request: web.Request) -> web.Response:
    store = _store(request)
    result = await store.remove(request.match_info["model_id"], force=_force(request))
    return web.json_response(
        {"id": result["id"], "object": "model", "deleted": True, "files": result["files"]}
    )


async def clean(request: web.Request) -> web.Response:
    store = _store(request)
    if not request.can_read_body:  # it removes everything: no accidental empty POST
        raise e.InvalidParams('a JSON body is required: {} or {"force": true}', param="force")
    body = await read_body(request, CleanRequest, services(request).config.current.http)
    return web.json_response(await store.remove_all(force=body.force))


ROUTES = (
    Route(
        "DELETE",
        "/v1/models/{model_id:.+}",
        delete_model,
        "Remove a model and its files (?force=true: even if loaded or pinned)",
        admin=True,
    ),
    Route(
        "POST",
        "/v1/models/clean",
        clean,
        "Remove every model, leftovers and staging ({force}: even if loaded or pinned)",
        CleanRequest,
        admin=True,
    ),
)
