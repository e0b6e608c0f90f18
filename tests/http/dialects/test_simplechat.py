"""The simple chat dialect (/chat, /chat/stream NDJSON), against the real model."""

from __future__ import annotations

import json

from tests.helpers import MODEL_ID


async def test_simple_chat_dialect(client) -> None:
    body = {
        "messages": [{"role": "user", "content": "Say hello"}],
        "config": {
            "temperature": 0,
            "maxTokens": 6,
            "topP": 0.9,
            "presencePenalty": 0,
            "frequencyPenalty": 0,
        },
    }
    whole = await (await client.post("/chat", json=body)).json()
    assert (
        whole["model"] == MODEL_ID
        and whole["predicted_tokens"] == 6
        and whole["stop_reason"] == "length"
    )
    response = await client.post("/chat/stream", json=body)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert {line["type"] for line in lines[:-1]} == {"fragment"}
    assert lines[-1]["type"] == "done" and lines[-1]["predicted_tokens"] == 6
    bad = await client.post("/chat", json={**body, "config": {"maxTokens": -1}})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "config.maxTokens"
