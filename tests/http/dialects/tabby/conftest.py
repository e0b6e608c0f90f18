"""What the TabbyAPI tests share: keys, the Go client's field types, SSE parsing."""

from __future__ import annotations

import json
from typing import Any

ADMIN = {"X-Admin-Key": "admin-key"}
USER = {"X-Api-Key": "user-key"}
KEYS = {"api_key": "user-key", "admin_key": "admin-key"}

# The Go client's declared field types (go-tabbyapi tabby/types.go), by JSON name: a
# wrong JSON type fails its decoder. ``int`` must be a JSON integer, not a float.
MODEL_CARD = {"id": str, "object": str, "created": int, "owned_by": str}
CARD_PARAMETERS = {
    "max_seq_len": int,
    "rope_scale": float,
    "rope_alpha": float,
    "max_batch_size": int,
    "cache_size": int,
    "cache_mode": str,
    "chunk_size": int,
    "prompt_template": str,
    "use_vision": bool,
}
LOAD_RESPONSE = {"model_type": str, "module": int, "modules": int, "status": str}


def decodes_as(value: Any, fields: dict[str, type]) -> None:
    """Assert that ``value`` decodes into a Go struct with these fields (absent or
    null fields keep Go's zero value; present ones must have the JSON type)."""
    assert isinstance(value, dict), value
    for name, kind in fields.items():
        if value.get(name) is None:
            continue
        field = value[name]
        if kind is float:
            assert isinstance(field, int | float) and not isinstance(field, bool), (name, field)
        elif kind is int:
            assert isinstance(field, int) and not isinstance(field, bool), (name, field)
        else:
            assert isinstance(field, kind), (name, field)


def decodes_card(card: Any) -> None:
    decodes_as(card, MODEL_CARD)
    for name in MODEL_CARD:
        assert name in card, name
    if card.get("parameters") is not None:
        decodes_as(card["parameters"], CARD_PARAMETERS)


def sse_json_events(text: str) -> list[dict[str, Any]]:
    """Every event of a stream, each parsed as JSON as the Go client's stream does
    (a ``[DONE]`` would fail there, so it fails here)."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data: "), block
            events.append(json.loads(block[len("data: ") :]))
    return events
