"""Sampler override presets over TabbyAPI's routes (both families), seen in the
generations of other dialects: a preset's value applies when a request leaves the
field alone, a forced one always."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.http.conftest import chat_body
from tests.http.dialects.tabby.conftest import ADMIN, KEYS, USER


async def _completion_tokens(client, **fields) -> int:  # type: ignore[no-untyped-def]
    body = chat_body(ignore_eos=True, **fields)
    answer = await (await client.post("/v1/chat/completions", json=body)).json()
    return int(answer["usage"]["completion_tokens"])


@pytest.mark.parametrize(
    ("listing", "switch", "unload"),
    [
        (
            "/v1/sampling/override/list",
            "/v1/sampling/override/switch",
            ("POST", "/v1/sampling/override/unload"),
        ),
        (
            "/v1/sampler/overrides",
            "/v1/sampler/overrides/switch",
            ("DELETE", "/v1/sampler/overrides/active"),
        ),
    ],
)
async def test_presets_apply_to_generations(
    make_client, tmp_path: Path, listing, switch, unload
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "short.toml").write_text("max_tokens = { override = 3 }\n")
    (tmp_path / "capped.yml").write_text("max_tokens:\n  override: 2\n  force: true\n")
    client = await make_client(sampling={"presets_dir": str(tmp_path)})
    state = await (await client.get(listing)).json()
    assert state == {"selected_preset": None, "overrides": {}, "presets": ["capped", "short"]}

    assert await _completion_tokens(client, max_tokens=6) == 6  # nothing in force
    answer = await client.post(switch, json={"preset": "short"})
    assert answer.status == 200 and (await answer.json())["selected_preset"] == "short"
    assert await _completion_tokens(client) == 3  # the request left max_tokens alone
    assert await _completion_tokens(client, max_tokens=6) == 6  # the request's own wins
    await client.post(switch, json={"preset": "capped"})
    assert await _completion_tokens(client, max_tokens=6) == 2  # forced
    state = await (await client.get(listing)).json()
    assert state["overrides"] == {"max_tokens": {"override": 2, "force": True, "additive": False}}

    await client.post(switch, json={"overrides": {"max_tokens": {"override": 4}}})
    state = await (await client.get(listing)).json()
    assert state["selected_preset"] is None and await _completion_tokens(client) == 4
    # Other dialects' generations follow the same overrides.
    simple = await (
        await client.post("/chat", json={"prompt": "Hi", "config": {"temperature": 0}})
    ).json()
    assert simple["predicted_tokens"] <= 4

    assert (await client.request(*unload)).status == 200
    assert (await (await client.get(listing)).json())["overrides"] == {}


async def test_switch_errors_and_keys(make_client, tmp_path: Path) -> None:
    (tmp_path / "short.toml").write_text("max_tokens = { override = 3 }\n")
    (tmp_path / "broken.toml").write_text("max_tokens = { override = -3 }\n")
    client = await make_client(http=KEYS, sampling={"presets_dir": str(tmp_path)})
    for body, code in (
        ({"preset": "nope"}, "unknown_preset"),
        ({"preset": "broken"}, "invalid_params"),
        ({}, "invalid_params"),
        ({"overrides": {"temperature": {"override": 5}}}, "invalid_params"),
    ):
        answer = await client.post("/v1/sampler/overrides/switch", json=body, headers=ADMIN)
        error = await answer.json()
        assert answer.status == 400 and error["error"]["code"] == code, (body, error)
    user = await client.post("/v1/sampler/overrides/switch", json={"preset": "short"}, headers=USER)
    assert user.status == 403
    assert (await client.delete("/v1/sampler/overrides/active", headers=USER)).status == 403
    # An API key sees what is in force, not the preset names.
    listed = await (await client.get("/v1/sampler/overrides", headers=USER)).json()
    assert listed["presets"] == []
    assert (await client.get("/v1/sampler/overrides")).status == 401
