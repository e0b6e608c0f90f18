"""TabbyAPI's answer shapes: model cards, lists, load progress and props.

Field names and JSON types are the ones TabbyAPI's Go client decodes (integers where
it declares ``int``, no ``null`` where it declares a string); extra fields are ours.
"""

from __future__ import annotations

import time
from typing import Any

from ....props import ModelProps
from ....views import ModelView, Resident
from ...cards import model_card

OWNER = "rkllmd"


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


def template_name(resident: Resident) -> str:
    """The name the resident model's chat template was chosen by (TabbyAPI's
    ``prompt_template``): the requested one, else where the backend found it."""
    return resident.options.chat_template_name or resident.props.chat_template_source


def card(view: ModelView) -> dict[str, Any]:
    """A catalogue model: TabbyAPI's card plus our card fields."""
    base = model_card(view)
    base["parameters"] = _without_none(
        {"max_seq_len": view.entry.meta.context_length, "format": view.entry.format}
    )
    return base


def bare_card(model_id: str) -> dict[str, Any]:
    """A card by id alone, as TabbyAPI lists what is loaded to an API key."""
    return {"id": model_id, "object": "model", "created": int(time.time()), "owned_by": OWNER}


def draft_card(draft: str, props: ModelProps) -> dict[str, Any]:
    """TabbyAPI's ``parameters.draft``: the draft model's card. It drafts within each
    generation's context; ``draft_tokens`` (ours) is the most it guesses a step."""
    tokens = props.details.get("draft_tokens")
    return {
        **bare_card(draft),
        "parameters": _without_none(
            {
                "max_seq_len": props.n_ctx,
                "cache_size": props.n_ctx,
                "draft_tokens": tokens if isinstance(tokens, int) else None,
            }
        ),
    }


def resident_card(resident: Resident, draft: str | None = None) -> dict[str, Any]:
    """The loaded model, with the parameters it was loaded with; ``draft``: the draft
    model it decodes with."""
    props = resident.props
    base = model_card(ModelView(resident.entry, True, props), props)
    batch = props.details.get("batch_size")
    base["parameters"] = _without_none(
        {
            "max_seq_len": props.n_ctx,
            "cache_size": props.n_ctx,
            "max_batch_size": props.slots,
            "chunk_size": batch if isinstance(batch, int) else None,
            "prompt_template": template_name(resident),
            "prompt_template_content": props.chat_template,
            "use_vision": props.vision,
            "format": resident.entry.format,
            "backend": props.backend,
            "draft": draft_card(draft, props) if draft else None,
        }
    )
    return base


def model_list(cards: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "list", "data": cards}


def load_progress(
    status: str, module: int, modules: int, model_type: str = "model", **extra: Any
) -> dict[str, Any]:
    """TabbyAPI's ModelLoadResponse; ``extra``: our stage, message and notes."""
    return {
        "model_type": model_type,
        "module": module,
        "modules": modules,
        "status": status,
        **extra,
    }


def props_answer(
    resident: Resident, queue: dict[str, int], embedding: str | None
) -> dict[str, Any]:
    props: ModelProps = resident.props
    return {
        "total_slots": props.slots,
        "chat_template": props.chat_template or "",
        "default_generation_settings": {"n_ctx": props.n_ctx},
        # Ours: the same facts under their plain names, and the rest of the report.
        "model": resident.entry.id,
        "n_ctx": props.n_ctx,
        "prompt_template": template_name(resident),
        "embedding_model": embedding,
        "queue": queue,
        "props": props.to_dict(),
    }
