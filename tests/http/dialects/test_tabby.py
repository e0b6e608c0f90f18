"""TabbyAPI's model routes, against the real model."""

from __future__ import annotations

from tests.helpers import MODEL_ID
from tests.http.conftest import sse_events


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
