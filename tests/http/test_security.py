"""Security defaults of the HTTP edge (in-process app; no model needed for most)."""

from __future__ import annotations

import pytest

from tests.http.conftest import chat_body


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
    assert (
        missing.status == 401 and (await missing.json())["error"]["type"] == "authentication_error"
    )
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer wrong"})).status == 401
    assert (
        await client.get("/v1/models", headers={"Authorization": "Bearer user-key"})
    ).status == 200
    assert (await client.get("/v1/models", headers={"X-Api-Key": "user-key"})).status == 200
    user_unload = await client.post(
        "/v1/models/unload", headers={"Authorization": "Bearer user-key"}
    )
    assert user_unload.status == 401
    admin_unload = await client.post(
        "/v1/models/unload", headers={"Authorization": "Bearer admin-key"}
    )
    assert admin_unload.status == 200


async def test_body_size_limit(make_client) -> None:
    client = await make_client(load=False, http={"max_body_bytes": 4096})
    big = chat_body("x" * 10_000)
    response = await client.post("/v1/chat/completions", json=big)
    assert (
        response.status == 413 and (await response.json())["error"]["code"] == "payload_too_large"
    )


@pytest.mark.parametrize("state", ["idle"])
async def test_health_is_public_and_reports_state(make_client, state: str) -> None:
    client = await make_client(load=False)
    body = await (await client.get("/v1/health")).json()
    assert body["state"] == state and body["model"] is None


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
