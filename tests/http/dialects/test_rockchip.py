"""RockchipLlama's management routes, against the real model."""

from __future__ import annotations

from tests.helpers import MODEL_ID


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
    assert loaded == {
        "loaded": True,
        "model_name": MODEL_ID,
        "model_path": f"{MODEL_ID}.gguf",
        "state": "ready",
    }
    card = await (await client.get("/v1/model")).json()
    assert card["parameters"]["max_seq_len"] == 512
