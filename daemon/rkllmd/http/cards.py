"""The model card every listing route shows (OpenAI's model object plus the
fields of the frontend model-info seed: name, description, contextLength, type).

The catalogue fills those fields when it scans a file (catalog/describe.py), so a
card never needs the model loaded; a loaded model's own report only fills a context
length no file states.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiohttp import web

from .. import errors as e
from ..catalog.metadata import MODEL_TYPES
from ..props import ModelProps
from ..views import ModelView
from ..wirejson import dumps


def model_card(view: ModelView, props: ModelProps | None = None) -> dict[str, Any]:
    """``props``: the resident model's report, for a context the metadata lacks."""
    entry, meta = view.entry, view.entry.meta
    context = meta.context_length or (props.n_ctx if props is not None else None)
    return {
        "id": entry.id,
        "object": "model",
        "created": int(entry.mtime),
        "owned_by": "rkllmd",
        "name": meta.name or entry.id,
        "description": meta.description or "",
        "contextLength": context,
        "type": meta.type or "chat",
        "format": entry.format,
        "size_bytes": entry.size_bytes,
        "loaded": view.loaded,
    }


def wanted_type(query: str | None) -> str | None:
    """The ``?type=`` filter: one of the model types, or 400 naming them."""
    if query is None:
        return None
    if query not in MODEL_TYPES:
        raise e.InvalidParams(
            f"type must be one of {', '.join(MODEL_TYPES)}; got {query[:40]!r}", param="type"
        )
    return query


class CardCache:
    """The encoded ``/v1/models`` bodies, one per ``?type=``, kept until the listing
    (a new set of models, another resident one) or the resident model's report changes.

    With 1,000 models, building and encoding the cards costs milliseconds; the list is
    asked for far more often than it changes. The manager hands out the same frozen
    views until something changes, so comparing them by identity is enough.
    """

    def __init__(self) -> None:
        self._views: tuple[ModelView, ...] = ()
        self._props: ModelProps | None = None
        self._bodies: dict[str | None, bytes] = {}

    def body(
        self, views: Sequence[ModelView], props: ModelProps | None, wanted: str | None
    ) -> bytes:
        if props is not self._props or not _same(views, self._views):
            self._views, self._props, self._bodies = tuple(views), props, {}
        body = self._bodies.get(wanted)
        if body is None:
            cards = [
                model_card(v, props if v.loaded else None)
                for v in views
                if wanted is None or (v.entry.meta.type or "chat") == wanted
            ]
            body = self._bodies[wanted] = dumps({"object": "list", "data": cards})
        return body


def _same(a: Sequence[ModelView], b: Sequence[ModelView]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


CARD_CACHE = web.AppKey("card_cache", CardCache)
