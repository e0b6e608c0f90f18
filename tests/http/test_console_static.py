"""The console's files, the state routes it reads, and /docs without bare $refs."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import MODEL_ID
from tests.http.conftest import MakeClient

CSP = "default-src 'self'"


async def test_page_is_served_at_root_and_ui_with_csp_and_etag(
    client: TestClient[Any, Any],
) -> None:
    for path in ("/", "/ui/", "/ui"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.content_type == "text/html"
        assert resp.headers["Content-Security-Policy"].startswith(CSP)
        assert '<script type="module" src="/ui/main.js">' in await resp.text()
    etag = resp.headers["ETag"]
    again = await client.get("/ui/", headers={"If-None-Match": etag})
    assert again.status == 304


async def test_page_has_no_inline_script_or_style(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/")).text()
    assert re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page) is None
    assert "<style" not in page and " style=" not in page and "onclick" not in page


async def test_scripts_come_gzipped_when_asked(client: TestClient[Any, Any]) -> None:
    plain = await client.get("/ui/main.js", headers={"Accept-Encoding": "identity"})
    packed = await client.get("/ui/main.js", auto_decompress=False)
    assert plain.headers.get("Content-Encoding") is None
    assert packed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await packed.read()) == await plain.read()
    assert plain.content_type == "text/javascript"


async def test_unknown_file_is_404_and_nothing_outside_the_folder(
    client: TestClient[Any, Any],
) -> None:
    for path in ("/ui/nope.js", "/ui/..%2Fapp.py", "/ui/../http/app.py"):
        resp = await client.get(path)
        assert resp.status == 404, path


async def test_console_total_weight_is_small(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/")).text()
    names = re.findall(r'(?:src|href)="/ui/([^"]+)"', page)
    total = 0
    for name in set(names) | {"api.js", "state.js", "models.js", "chat.js", "pull.js"}:
        resp = await client.get(f"/ui/{name}", auto_decompress=False)
        assert resp.status == 200, name
        total += len(await resp.read())
    assert total < 200 * 1024


async def test_page_is_public_but_the_api_needs_the_key(make_client: MakeClient) -> None:
    client = await make_client(http={"api_key": "k1"})
    assert (await client.get("/ui/")).status == 200
    assert (await client.get("/ui/state.js")).status == 200
    assert (await client.get("/v1/status")).status == 401
    ok = await client.get("/v1/status", headers={"Authorization": "Bearer k1"})
    assert ok.status == 200


async def test_status_route_is_rkllmctl_status(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/v1/status")).json()
    assert body["state"] == "ready"
    assert body["model"] == MODEL_ID
    assert body["worker_pid"] > 0
    assert body["worker_rss_bytes"] > 0
    assert body["vision"] is False
    assert set(body["counters"]) >= {"generations", "aborted", "completion_tokens"}


async def test_catalog_lists_files_with_metadata(client: TestClient[Any, Any]) -> None:
    body = await (await client.get("/v1/catalog")).json()
    (row,) = body["data"]
    assert row["file"].endswith(".gguf") and row["loaded"] is True and row["format"] == "gguf"


async def test_events_stream_status_then_models_then_changes(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/v1/events")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    seen: list[tuple[str, Any]] = []

    async def next_event() -> tuple[str, Any]:
        lines: list[str] = []
        while True:
            line = (await resp.content.readline()).decode().rstrip("\n")
            if line == "" and lines:
                break
            if line and not line.startswith(":"):
                lines.append(line)
        name = lines[0].removeprefix("event: ")
        return name, json.loads(lines[1].removeprefix("data: "))

    seen.append(await next_event())
    seen.append(await next_event())
    assert [name for name, _ in seen] == ["status", "models"]
    assert seen[0][1]["state"] == "ready"
    unload = await client.post("/v1/models/unload")
    assert unload.status == 200
    states = []
    while "idle" not in states:  # unloading, then idle (each sent once)
        name, data = await next_event()
        if name == "status":
            states.append(data["state"])
    resp.close()


async def test_docs_page_has_every_body_resolved(client: TestClient[Any, Any]) -> None:
    page = await (await client.get("/docs")).text()
    assert "$ref" not in page
    assert "ChatCompletionRequest" not in page or "messages" in page
    spec = await (await client.get("/openapi.json")).json()
    names = set(spec["components"]["schemas"])
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec)))
    assert refs and refs <= names


async def test_the_page_s_own_origin_may_post_another_may_not(make_client: MakeClient) -> None:
    client = await make_client()
    host = f"127.0.0.1:{client.port}"
    own = {"Origin": f"http://{host}", "Host": host}
    assert (await client.post("/v1/models/unload", json={}, headers=own)).status == 200
    for origin in ("http://evil.example", f"http://127.0.0.1:{client.port + 1}"):
        refused = await client.post("/v1/models/unload", json={}, headers={"Origin": origin})
        assert refused.status == 403, origin


async def test_a_rebound_dns_name_is_not_its_own_origin(make_client: MakeClient) -> None:
    """On a LAN bind any Host goes: a page of evil.example rebound to the board sends
    Origin and Host both naming evil.example; only names the owner allowed count."""
    client = await make_client(
        http={
            "listen": "0.0.0.0:8080",
            "allow_unauthenticated_remote": True,
            "allowed_hosts": ["board.local"],
        }
    )
    rebound = {"Origin": "http://evil.example:8080", "Host": "evil.example:8080"}
    assert (await client.get("/v1/status", headers=rebound)).status == 403
    allowed = {"Origin": "http://board.local:8080", "Host": "board.local:8080"}
    assert (await client.get("/v1/status", headers=allowed)).status == 200
    by_address = {"Origin": "http://192.168.1.20:8080", "Host": "192.168.1.20:8080"}
    assert (await client.get("/v1/status", headers=by_address)).status == 200
