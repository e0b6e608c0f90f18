"""RockchipLlama, TabbyAPI and the simple chat dialect, against the real model."""

from __future__ import annotations

import json

from tests.helpers import MODEL_ID
from tests.http.conftest import sse_events


async def test_rockchip_llama_dialect(client) -> None:
    available = await (await client.get("/v1/models/available")).json()
    assert available["total"] == 1 and available["loaded_model"] == MODEL_ID
    (model,) = available["models"]
    assert (
        model["name"] == MODEL_ID
        and model["loaded"] is True
        and model["size_mb"] == round(98362432 / 2**20, 2)
    )

    unloaded = await (await client.post("/v1/models/unload")).json()
    assert unloaded["success"] is True
    assert (await (await client.get("/v1/models/loaded")).json())["loaded"] is False

    response = await client.post(
        "/v1/models/load", json={"model": "smollm2", "max_context_len": 512, "num_npu_core": 3}
    )
    body = await response.json()
    assert response.status == 200 and body["success"] and body["model_name"] == MODEL_ID
    assert any("num_npu_core" in note for note in body["notes"])
    loaded = await (await client.get("/v1/models/loaded")).json()
    assert loaded == {"loaded": True, "model_name": MODEL_ID, "state": "ready"}
    card = await (await client.get("/v1/model")).json()
    assert card["parameters"]["max_seq_len"] == 512


async def test_tabby_dialect(client) -> None:
    card = await (await client.get("/v1/model")).json()
    assert card["id"] == MODEL_ID and card["parameters"]["max_seq_len"] == 4096
    assert "<|im_start|>" in card["parameters"]["prompt_template_content"]
    listing = await (await client.get("/v1/model/list")).json()
    assert [c["id"] for c in listing["data"]] == [MODEL_ID]
    props = await (await client.get("/v1/model/props")).json()
    assert props["n_ctx"] == 4096 and props["total_slots"] == 1 and props["chat_template"]

    assert (await client.post("/v1/model/unload")).status == 200
    missing = await client.get("/v1/model")
    assert missing.status == 400 and (await missing.json())["error"]["code"] == "no_model_loaded"

    response = await client.post(
        "/v1/model/load", json={"model_name": "smollm2", "max_seq_len": 1024}
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    statuses = [e["status"] for e in events[:-1]]
    assert statuses[-1] == "finished" and "processing" in statuses
    assert (await (await client.get("/v1/model/props")).json())["n_ctx"] == 1024


async def test_tabby_load_unknown_model_is_plain_404(client) -> None:
    response = await client.post("/v1/model/load", json={"model_name": "nope"})
    assert response.status == 404 and (await response.json())["error"]["code"] == "model_not_found"


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
