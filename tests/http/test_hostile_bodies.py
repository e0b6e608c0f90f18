"""Bodies built to break parsers, and POSTs that slip past the media-type rule.

Each answer must be a 4xx with a stable code, the model must stay loaded (state
``ready``, the same worker), and nothing must reach the generation path.
"""

from __future__ import annotations

import json
from typing import Any

from tests.http.conftest import chat_body, manager_of


def deep_tools(depth: int) -> str:
    """OpenAI tools whose parameter schema nests ``depth`` object levels, two JSON
    levels each; as JSON text (the standard library's encoder stops near 1,000)."""
    schema = '{"type":"object","properties":{"x":' * depth + '{"type":"string"}' + "}}" * depth
    return '[{"type":"function","function":{"name":"f","parameters":' + schema + "}}]"


def with_tools(body: dict[str, Any], tools: str) -> bytes:
    return (json.dumps(body)[:-1] + ',"tools":' + tools + "}").encode()


async def test_a_deeply_nested_tool_schema_is_refused_and_the_model_stays(client) -> None:
    manager = manager_of(client)
    pid = manager.status().resident.worker_pid
    resp = await client.post(
        "/v1/chat/completions",
        data=with_tools(chat_body(), deep_tools(300)),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["code"] == "invalid_params" and "nested deeper than 64" in error["message"]
    status = manager.status()
    assert status.state.value == "ready" and status.resident.worker_pid == pid
    ok = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert ok.status == 200


async def test_a_body_nested_beyond_the_parser_is_a_400(client) -> None:
    raw = b'{"model":"smollm2","messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    resp = await client.post(
        "/v1/chat/completions", data=raw, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "invalid_params"


async def test_text_plain_posts_are_refused_chunked_or_empty(client) -> None:
    manager = manager_of(client)

    async def chunks() -> Any:
        yield b"{}"

    for data in (b"", chunks()):
        resp = await client.post(
            "/v1/models/unload", data=data, headers={"Content-Type": "text/plain"}
        )
        assert resp.status == 415, await resp.text()
        assert (await resp.json())["error"]["code"] == "unsupported_media_type"
    assert manager.status().state.value == "ready"  # nothing was unloaded
    # No body and no type (curl -X POST) still works, as does JSON.
    resp = await client.post("/v1/models/unload")
    assert resp.status == 200, await resp.text()
