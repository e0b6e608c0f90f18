"""Security defaults of the HTTP edge (in-process app; no model needed for most)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from rkllmd.errors import RkllmdError
from rkllmd.residency import SpawnWorker
from rkllmd.worker.proxy import WorkerProcess

from tests.helpers import MODEL_ID
from tests.http.conftest import chat_body, manager_of


async def test_dns_rebinding_host_check(make_client) -> None:
    client = await make_client(load=False)
    assert (await client.get("/v1/models", headers={"Host": "evil.example"})).status == 403
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080", "app.localhost"):
        assert (await client.get("/v1/models", headers={"Host": host})).status == 200, host
    allowed = await make_client(load=False, http={"allowed_hosts": ["board.lan"]})
    assert (await allowed.get("/v1/models", headers={"Host": "board.lan:8080"})).status == 200


async def test_no_cors_by_default_and_csrf_refused(make_client) -> None:
    client = await make_client(load=False)
    response = await client.get("/v1/models")
    assert "Access-Control-Allow-Origin" not in response.headers
    evil = await client.post(
        "/v1/chat/completions", json=chat_body(), headers={"Origin": "http://evil.example"}
    )
    assert evil.status == 403
    text = await client.post(
        "/v1/chat/completions", data='{"messages": []}', headers={"Content-Type": "text/plain"}
    )
    assert text.status == 415 and (await text.json())["error"]["code"] == "unsupported_media_type"
    assert (
        await client.options("/v1/models", headers={"Origin": "http://evil.example"})
    ).status == 403


async def test_configured_cors_origin(make_client) -> None:
    client = await make_client(load=False, http={"cors_origins": ["http://ui.local"]})
    preflight = await client.options("/v1/chat/completions", headers={"Origin": "http://ui.local"})
    assert (
        preflight.status == 204
        and preflight.headers["Access-Control-Allow-Origin"] == "http://ui.local"
    )
    response = await client.get("/v1/models", headers={"Origin": "http://ui.local"})
    assert response.headers["Access-Control-Allow-Origin"] == "http://ui.local"


async def test_api_key_and_admin_key(make_client) -> None:
    client = await make_client(load=False, http={"api_key": "user-key", "admin_key": "admin-key"})
    assert (await client.get("/health")).status == 200  # public
    missing = await client.get("/v1/models")
    body = await missing.json()
    assert missing.status == 401 and body["error"]["type"] == "authentication_error"
    assert body["message"] == body["error"]["message"]  # TabbyAPI's Go client reads this
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await client.get("/v1/models", headers={"X-Api-Key": "wrong"})).status == 401
    for headers in (
        {"Authorization": "Bearer user-key"},
        {"X-Api-Key": "user-key"},
        {"X-Admin-Key": "admin-key"},
        {"Authorization": "Bearer admin-key"},
    ):
        assert (await client.get("/v1/models", headers=headers)).status == 200, headers
    for headers in ({"Authorization": "Bearer user-key"}, {"X-Api-Key": "user-key"}):
        refused = await client.post("/v1/models/unload", headers=headers)
        body = await refused.json()
        assert refused.status == 403 and body["error"]["type"] == "permission_error", headers
        assert body["error"]["code"] == "permission_denied"
    for headers in ({}, {"X-Admin-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        refused = await client.post("/v1/models/unload", headers=headers)
        assert refused.status == 401, headers
        assert (await refused.json())["error"]["type"] == "authentication_error"
    for headers in ({"Authorization": "Bearer admin-key"}, {"X-Admin-Key": "admin-key"}):
        assert (await client.post("/v1/models/unload", headers=headers)).status == 200, headers


async def test_admin_key_alone_guards_management_only(make_client) -> None:
    client = await make_client(load=False, http={"admin_key": "admin-key"})
    assert (await client.get("/v1/models")).status == 200
    assert (await client.post("/v1/models/unload")).status == 401
    assert (
        await client.post("/v1/models/unload", headers={"X-Admin-Key": "admin-key"})
    ).status == 200


async def test_api_key_alone_manages(make_client) -> None:
    """Without an admin key, the API key is the only key and may do everything."""
    client = await make_client(load=False, http={"api_key": "user-key"})
    assert (await client.post("/v1/models/unload", headers={"X-Api-Key": "user-key"})).status == 200
    assert (await client.post("/v1/models/unload")).status == 401


async def test_body_size_limit(make_client) -> None:
    client = await make_client(load=False, http={"max_body_bytes": 4096})
    big = chat_body("x" * 10_000)
    response = await client.post("/v1/chat/completions", json=big)
    assert (
        response.status == 413 and (await response.json())["error"]["code"] == "payload_too_large"
    )


async def _gated_spawn(gate: asyncio.Event) -> SpawnWorker:
    async def spawn(on_exit: Any) -> WorkerProcess:
        await gate.wait()  # the manager is LOADING from before it asks for a worker
        return await WorkerProcess.spawn(on_exit)

    return spawn


async def _into_state(make_client: Any, smol_dir: Path, state: str) -> TestClient[Any, Any]:
    """A client whose manager is in ``state``, held there until the test ends."""
    if state == "loading":
        gate = asyncio.Event()
        client = await make_client(load=False, spawn=await _gated_spawn(gate))
        held = asyncio.ensure_future(manager_of(client).load(MODEL_ID))
        await _until(lambda: manager_of(client).state.value == "loading")
        client.held = (held, gate)  # type: ignore[attr-defined]  # kept alive with the client
        return client
    if state == "failed":
        broken = smol_dir / "broken.gguf"
        broken.write_bytes(b"GGUF" + bytes(68))  # version 0: no runtime takes it
        os.utime(broken, (1, 1))
        client = await make_client(load=False)
        with contextlib.suppress(RkllmdError):
            await manager_of(client).load("broken")
        return client
    client = await make_client(load=state != "idle")
    if state == "generating":
        request = chat_body(max_tokens=100_000, ignore_eos=True, stream=True)
        response = await client.post("/v1/chat/completions", json=request)
        await response.content.readline()  # the first chunk: the generation runs
        client.held = response  # type: ignore[attr-defined]
    return client


async def _until(predicate: Any) -> None:
    async with asyncio.timeout(60):
        while not predicate():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize(
    ("state", "status", "model"),
    [
        ("idle", 200, None),
        ("ready", 200, MODEL_ID),
        ("generating", 200, MODEL_ID),
        ("loading", 503, MODEL_ID),
        ("failed", 503, "broken"),
    ],
)
async def test_health_is_public_and_reports_state(
    make_client, smol_dir: Path, state: str, status: int, model: str | None
) -> None:
    client = await _into_state(make_client, smol_dir, state)
    response = await client.get("/v1/health")
    body = await response.json()
    assert (response.status, body["state"], body["model"]) == (status, state, model)
    assert body["status"] == ("ok" if status == 200 else "unavailable")
    assert (body["reason"] is not None) == (state == "failed")
    held = getattr(client, "held", None)
    if isinstance(held, tuple):
        held[1].set()  # let the held load finish so the worker is shut down cleanly
        await held[0]
    elif held is not None:
        held.close()


async def test_metrics_and_openapi(client) -> None:
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=3))
    text = await (await client.get("/metrics")).text()
    # Counts, not just names: an unobserved histogram still prints its series.
    for sample in (
        'rkllmd_http_requests_total{route="/v1/chat/completions",status="200"} 1.0',
        'rkllmd_tokens_total{kind="completion"} 3.0',
        "rkllmd_queue_waiting 0.0",
        "rkllmd_time_to_first_token_seconds_count 1.0",
        "rkllmd_decode_tokens_per_second_count 1.0",
        "rkllmd_model_load_seconds_count 1.0",
        'rkllmd_model_state{state="ready"} 1.0',
    ):
        assert sample in text.splitlines(), sample
    spec = await (await client.get("/openapi.json")).json()
    from rkllmd.http.app import ROUTES

    for route in ROUTES:
        path = route.path.replace("{model_id:.+}", "{model_id}")
        assert route.method.lower() in spec["paths"][path], route.path
    schema = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    assert schema["$ref"].split("/")[-1] in spec["components"]["schemas"]
    page = await (await client.get("/docs")).text()
    assert "/v1/chat/completions" in page and "<html>" in page


async def test_auth_permission_names_the_key(make_client) -> None:
    client = await make_client(load=False, http={"api_key": "user-key", "admin_key": "admin-key"})
    for headers, expected in (
        ({"X-Admin-Key": "admin-key"}, "admin"),
        ({"Authorization": "Bearer admin-key"}, "admin"),
        ({"X-Api-Key": "user-key"}, "api"),
        ({"Authorization": "Bearer user-key"}, "api"),
    ):
        answer = await client.get("/v1/auth/permission", headers=headers)
        assert (await answer.json()) == {"permission": expected}, headers
    assert (await client.get("/v1/auth/permission")).status == 401
    open_client = await make_client(load=False)
    assert (await (await open_client.get("/v1/auth/permission")).json())["permission"] == "admin"


async def test_fixed_paths_answer_405_to_other_methods(make_client) -> None:
    """GET /v1/models/{id} must not take GET on a fixed path that has no GET."""
    client = await make_client(load=False)
    for path in ("/v1/models/load", "/v1/models/embedding/load", "/v1/models/unload"):
        answer = await client.get(path)
        assert answer.status == 405, path
        assert "POST" in answer.headers["Allow"]
        assert (await answer.json())["error"]["code"] == "method_not_allowed"
    assert (await client.get("/v1/models/nope")).status == 404  # still a model lookup
