"""A failed load leaves the previous model serving, whichever HTTP surface asked for it:
RockchipLlama's and the simple chat dialect's load routes, TabbyAPI's, and a chat
naming the broken model (load on request). The broken model is a file with a bad GGUF
header, which every backend (llama.cpp, the fast tier's fake) refuses."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MODEL_ID
from tests.http.conftest import manager_of

BROKEN = "broken"


@pytest.fixture
async def client(make_client, smol_dir: Path) -> Any:
    path = smol_dir / f"{BROKEN}.gguf"
    path.write_bytes(b"GGUF\x63\x00\x00\x00" + os.urandom(4096))  # an unknown GGUF version
    past = time.time() - 60
    os.utime(path, (past, past))
    return await make_client()


async def still_serving(client: Any) -> None:
    status = manager_of(client).status()
    assert (status.state, status.model) == ("ready", MODEL_ID)
    assert status.load_failure is not None and status.load_failure.model == BROKEN
    assert status.load_failure.restored == MODEL_ID
    health = await client.get("/health")
    body = await health.json()
    assert health.status == 200 and body["load_failure"]["restored"] == MODEL_ID
    reply = await client.post(
        "/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    )
    assert reply.status == 200 and (await reply.json())["model"] == MODEL_ID


async def test_rockchip_load(client) -> None:
    response = await client.post("/v1/models/load", json={"model": BROKEN})
    error = (await response.json())["error"]
    assert response.status == 500 and error["code"] == "load_failed"
    assert error["details"]["restored"] == MODEL_ID
    await still_serving(client)


async def test_simple_chat_load(client) -> None:
    response = await client.post("/models/load", json={"model_key": BROKEN})
    body = await response.json()
    assert response.status == 500
    assert body["loaded"] is False and body["code"] == "load_failed"
    assert body["error"].startswith("Failed to load model: ") and body["restored"] == MODEL_ID
    await still_serving(client)


async def test_tabby_load(client) -> None:
    response = await client.post("/v1/model/load", json={"model_name": BROKEN})
    text = await response.text()
    assert "load_failed" in text  # in-band once the progress stream has started, or plain
    await still_serving(client)


async def test_load_on_request(client) -> None:
    for path, body in (
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
        ("/v1/completions", {"prompt": "Hi"}),
        ("/chat", {"messages": [{"role": "user", "content": "Hi"}]}),
    ):
        response = await client.post(path, json={"model": BROKEN, **body})
        assert response.status == 500, path
        assert "load_failed" in await response.text()
        await still_serving(client)
