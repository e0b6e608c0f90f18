"""Implicit loads are management: with an admin key set, a request that would load or
replace a model needs that key (unless http.allow_inference_loads)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from rkllmd.http.services import SERVICES

from tests.helpers import MODEL_ID, place_model
from tests.http.conftest import MakeClient, chat_body

KEYS = {"api_key": "user-key", "admin_key": "admin-key"}
USER = {"Authorization": "Bearer user-key"}
ADMIN = {"Authorization": "Bearer admin-key"}
OTHER = "Copy-of-SmolLM2"  # a second model: the same file under another name


def resident(client: TestClient[Any, Any]) -> str | None:
    return client.app[SERVICES].manager.status().model


async def refused(response: Any, model: str) -> None:
    assert response.status == 403, await response.text()
    error = (await response.json())["error"]
    assert error["type"] == "permission_error"
    assert error["code"] == "load_not_permitted"
    assert model in error["message"]
    assert error["details"]["model"] == model


async def test_the_api_key_cannot_load_or_replace(make_client: MakeClient, smol_dir: Path) -> None:
    place_model(smol_dir, f"{OTHER}.gguf")
    client = await make_client(load=False, http=KEYS)
    await refused(
        await client.post("/v1/chat/completions", json=chat_body(), headers=USER), MODEL_ID
    )
    await refused(
        await client.post(
            "/v1/completions", json={"model": "smollm2-135m", "prompt": "Hi"}, headers=USER
        ),
        MODEL_ID,
    )
    embed = {"model": "smollm2-135m", "input": "hello"}
    await refused(await client.post("/v1/embeddings", json=embed, headers=USER), MODEL_ID)
    simple = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hi"}]}
    # The simple chat dialect answers in its own shape ({"detail", "code", ...}).
    response = await client.post("/chat", json=simple, headers=USER)
    body = await response.json()
    assert response.status == 403 and body["code"] == "load_not_permitted"
    assert body["model"] == MODEL_ID and MODEL_ID in body["detail"]
    assert resident(client) is None  # nothing was loaded by any of them

    # The admin key loads by naming the model, like an explicit load.
    body = chat_body(max_tokens=4, model="smollm2-135m")
    assert (await client.post("/v1/chat/completions", json=body, headers=ADMIN)).status == 200
    assert resident(client) == MODEL_ID
    # What is resident serves the API key as usual.
    assert (await client.post("/v1/chat/completions", json=body, headers=USER)).status == 200
    # Naming another model would replace the resident one: refused, which stays.
    other = chat_body(max_tokens=4, model=OTHER)
    await refused(await client.post("/v1/chat/completions", json=other, headers=USER), OTHER)
    assert resident(client) == MODEL_ID
    assert (await client.post("/v1/chat/completions", json=other, headers=ADMIN)).status == 200
    assert resident(client) == OTHER


async def test_the_switch_lets_the_api_key_load(make_client: MakeClient) -> None:
    client = await make_client(load=False, http={**KEYS, "allow_inference_loads": True})
    body = chat_body(max_tokens=4, model="smollm2-135m")
    assert (await client.post("/v1/chat/completions", json=body, headers=USER)).status == 200
    assert resident(client) == MODEL_ID


async def test_without_an_admin_key_the_api_key_loads(make_client: MakeClient) -> None:
    client = await make_client(load=False, http={"api_key": "user-key"})
    body = chat_body(max_tokens=4, model="smollm2-135m")
    assert (await client.post("/v1/chat/completions", json=body, headers=USER)).status == 200
    assert resident(client) == MODEL_ID


async def test_an_admin_key_alone_gates_anonymous_loads(make_client: MakeClient) -> None:
    """No API key: the API is open, but loading is still the admin's."""
    client = await make_client(load=False, http={"admin_key": "admin-key"})
    body = chat_body(max_tokens=4, model="smollm2-135m")
    await refused(await client.post("/v1/chat/completions", json=body), MODEL_ID)
    assert resident(client) is None
