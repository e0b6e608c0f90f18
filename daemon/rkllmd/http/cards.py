"""The model card every listing route shows (OpenAI's model object plus the
fields of the frontend model-info seed: name, description, contextLength, type)."""

from __future__ import annotations

from typing import Any

from ..props import ModelProps
from ..views import ModelView


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
