"""TabbyAPI's model routes, both route families: answers in the shapes TabbyAPI's Go
client decodes, load semantics, errors and key rules (fast tier: the fake backend)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rkllmd.templates import TemplateLibrary

from tests.helpers import MODEL_ID
from tests.http.conftest import manager_of
from tests.http.dialects.tabby.conftest import (
    ADMIN,
    KEYS,
    LOAD_RESPONSE,
    USER,
    decodes_as,
    decodes_card,
    sse_json_events,
)


def _pid(client) -> int | None:  # type: ignore[no-untyped-def]
    return manager_of(client).status().worker_pid


@pytest.mark.parametrize("path", ["/v1/model", "/v1/models/current"])
async def test_current_model_card(make_client, path: str) -> None:
    client = await make_client(http=KEYS)
    answer = await client.get(path, headers=USER)
    card = await answer.json()
    assert answer.status == 200 and card["id"] == MODEL_ID
    decodes_card(card)
    parameters = card["parameters"]
    assert parameters["max_seq_len"] == 4096
    # max_batch_size: the generations the model runs at once (llama.cpp's sequences).
    health = await (await client.get("/health")).json()
    assert parameters["max_batch_size"] == health["slots"]["total"] >= 1
    assert parameters["prompt_template"] == "model"  # the model's own template
    assert parameters["prompt_template_content"]


@pytest.mark.parametrize("path", ["/v1/model", "/v1/models/current", "/props"])
async def test_no_model_loaded_is_400_with_a_top_level_message(make_client, path: str) -> None:
    client = await make_client(load=False)
    answer = await client.get(path)
    body = await answer.json()
    assert answer.status == 400 and body["error"]["code"] == "no_model_loaded"
    assert body["message"] == body["error"]["message"]


async def test_list_shows_all_to_the_admin_and_what_is_loaded_to_an_api_key(
    make_client, smol_dir: Path
) -> None:
    other = smol_dir / "other.gguf"
    os.link(smol_dir / f"{MODEL_ID}.gguf", other)
    os.utime(other, (1, 1))
    client = await make_client(http=KEYS)
    admin = await (await client.get("/v1/model/list", headers=ADMIN)).json()
    assert admin["object"] == "list" and {c["id"] for c in admin["data"]} >= {MODEL_ID}
    for card in admin["data"]:
        decodes_card(card)
    user = await (await client.get("/v1/model/list", headers=USER)).json()
    assert [c["id"] for c in user["data"]] == [MODEL_ID]
    # The Go client's List is OpenAI's /v1/models: every card, each decodable.
    listed = await (await client.get("/v1/models", headers=USER)).json()
    for card in listed["data"]:
        decodes_card(card)


@pytest.mark.parametrize("path", ["/props", "/v1/model/props", "/v1/models/props"])
async def test_props(client, path: str) -> None:
    props = await (await client.get(path)).json()
    decodes_as(props, {"total_slots": int, "chat_template": str})
    decodes_as(props["default_generation_settings"], {"n_ctx": int})
    assert props["default_generation_settings"]["n_ctx"] == 4096
    # The generations the model runs at once: llama.cpp's sequences (the fake runs 1).
    health = await (await client.get("/health")).json()
    assert props["total_slots"] == health["slots"]["total"] >= 1
    assert props["chat_template"] and props["model"] == MODEL_ID


async def test_go_load_answers_one_json_object(make_client) -> None:
    client = await make_client(load=False, http=KEYS)
    answer = await client.post(
        "/v1/models/load",
        json={"model_name": "smollm2", "max_seq_len": 1024},
        headers={**ADMIN, "Accept": "application/json"},
    )
    assert answer.status == 200 and answer.content_type == "application/json"
    body = await answer.json()
    decodes_as(body, LOAD_RESPONSE)
    assert body["status"] == "finished" and body["module"] == body["modules"] == 1
    assert body["notes"] == []
    props = await (await client.get("/v1/models/props", headers=USER)).json()
    assert props["default_generation_settings"]["n_ctx"] == 1024


@pytest.mark.parametrize(
    ("headers", "extra"),
    [({"Accept": "text/event-stream"}, {}), ({"Accept": "application/json"}, {"stream": True})],
)
async def test_go_load_stream_on_request(make_client, headers, extra) -> None:  # type: ignore[no-untyped-def]
    client = await make_client(load=False)
    answer = await client.post(
        "/v1/models/load", json={"model_name": "smollm2", **extra}, headers=headers
    )
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    events = sse_json_events(await answer.text())
    for event in events:
        decodes_as(event, LOAD_RESPONSE)
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "finished" and set(statuses[:-1]) == {"processing"}
    assert [e["module"] for e in events] == sorted(e["module"] for e in events)
    assert manager_of(client).status().model == MODEL_ID


async def test_tabby_own_load_path_streams(make_client) -> None:
    client = await make_client(load=False)
    answer = await client.post("/v1/model/load", json={"model_name": "smollm2"})
    assert answer.headers["Content-Type"].startswith("text/event-stream")
    events = sse_json_events(await answer.text())
    assert events[-1]["status"] == "finished" and events[-1]["notes"] == []


async def test_the_seed_example_load(client) -> None:
    """The document's own example: a template by name, and knobs that cannot apply."""
    answer = await client.post(
        "/v1/models/load",
        json={
            "model_name": "smollm2",
            "max_seq_len": 4096,
            "rope_scale": 1.0,
            "rope_alpha": "auto",
            "cache_size": 512,
            "prompt_template": "mistral",
        },
    )
    body = await answer.json()
    assert answer.status == 200 and body["status"] == "finished", body
    assert [n for n in body["notes"] if "cache_size" in n], body["notes"]
    card = await (await client.get("/v1/models/current")).json()
    mistral = TemplateLibrary(None).get("mistral").text
    assert card["parameters"]["prompt_template"] == "mistral"
    assert card["parameters"]["prompt_template_content"] == mistral != "mistral"
    assert card["parameters"]["max_seq_len"] == 4096


async def test_knobs_without_an_equivalent_are_named(client) -> None:
    answer = await client.post(
        "/v1/models/load",
        json={
            "model_name": "smollm2",
            "rope_scale": 2.0,
            "rope_alpha": 2.5,
            "gpu_split": [24.0, 20.0],
            "cache_mode": "Q4",
            "chunk_size": 256,
        },
    )
    notes = " ".join((await answer.json())["notes"])
    for knob in ("rope_scale", "rope_alpha", "gpu_split", "cache_mode"):
        assert knob in notes, knob
    assert "chunk_size" not in notes  # GGUF: it is the prefill batch size
    resident = manager_of(client).status().resident
    assert resident is not None and resident.options.batch_size == 256


async def test_reload_only_when_the_options_differ(client) -> None:
    first = _pid(client)
    await client.post("/v1/models/load", json={"model_name": "smollm2"})
    assert _pid(client) == first  # the same options: a no-op
    await client.post("/v1/models/load", json={"model_name": "smollm2", "max_seq_len": 2048})
    second = _pid(client)
    assert second != first
    await client.post("/v1/models/load", json={"model_name": "smollm2"})
    assert _pid(client) != second  # back to the defaults: another reload


async def test_load_errors(client) -> None:
    unknown = await client.post("/v1/models/load", json={"model_name": "nope"})
    assert unknown.status == 404 and (await unknown.json())["error"]["code"] == "model_not_found"
    stream = await client.post("/v1/model/load", json={"model_name": "nope"})
    assert stream.status == 404  # before any stream starts
    missing = await client.post("/v1/model/load", json={"max_seq_len": 1024})
    assert missing.status == 400 and (await missing.json())["error"]["param"] == "model_name"
    template = await client.post(
        "/v1/models/load", json={"model_name": "smollm2", "prompt_template": "nope"}
    )
    body = await template.json()
    assert template.status == 400 and body["error"]["code"] == "unknown_template"
    assert "chatml" in body["message"] and "mistral" in body["error"]["details"]["available"]
    negative = await client.post(
        "/v1/models/load", json={"model_name": "smollm2", "cache_size": -1}
    )
    assert negative.status == 400
    # Nothing above replaced the resident model.
    assert manager_of(client).status().model == MODEL_ID


async def test_rockchip_body_still_loads_on_the_shared_path(client) -> None:
    answer = await client.post("/v1/models/load", json={"model": "smollm2", "max_context_len": 512})
    body = await answer.json()
    assert answer.status == 200 and body["success"] is True and body["model_name"] == MODEL_ID
    bad = await client.post("/v1/models/load", json={"max_context_len": 512})
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "model"


@pytest.mark.parametrize(
    ("method", "path"), [("DELETE", "/v1/models/current"), ("POST", "/v1/model/unload")]
)
async def test_unload(client, method: str, path: str) -> None:
    answer = await client.request(method, path)
    assert answer.status == 200
    assert (await client.get("/v1/models/current")).status == 400
    assert (await client.request(method, path)).status == 200  # nothing loaded: still fine


async def test_drafts_come_from_the_draft_folder_and_sidecars(make_client, smol_dir: Path) -> None:
    (smol_dir / "draft").mkdir()
    tiny = smol_dir / "draft" / "tiny-draft.gguf"
    os.link(smol_dir / f"{MODEL_ID}.gguf", tiny)
    os.utime(tiny, (1, 1))
    client = await make_client(http=KEYS)
    for path in ("/v1/model/draft/list", "/v1/models/draft"):
        drafts = await (await client.get(path, headers=ADMIN)).json()
        assert [c["id"] for c in drafts["data"]] == ["tiny-draft"], path
        decodes_card(drafts["data"][0])
        assert (await (await client.get(path, headers=USER)).json())["data"] == []
    listed = await (await client.get("/v1/model/list", headers=ADMIN)).json()
    assert "tiny-draft" not in [c["id"] for c in listed["data"]]


async def test_a_sidecar_makes_a_draft_model(make_client, smol_dir: Path) -> None:
    small = smol_dir / "small.gguf"
    os.link(smol_dir / f"{MODEL_ID}.gguf", small)
    os.utime(small, (1, 1))
    (smol_dir / "small.rkllmd.json").write_text('{"type": "draft"}')
    client = await make_client()
    drafts = await (await client.get("/v1/models/draft")).json()
    assert [c["id"] for c in drafts["data"]] == ["small"]


async def test_service_info_is_public(make_client) -> None:
    client = await make_client(load=False, http=KEYS)
    info = await (await client.get("/.well-known/serviceinfo")).json()
    assert info["software"]["name"] == "rkllmd" and info["api"]["openai"]["relative_url"] == "/v1"


MANAGEMENT = [
    ("POST", "/v1/model/load", {"model_name": "smollm2"}),
    ("POST", "/v1/models/load", {"model_name": "smollm2"}),
    ("POST", "/v1/model/unload", None),
    ("DELETE", "/v1/models/current", None),
    ("POST", "/v1/models/download", {"repo_id": "a/b"}),
    ("POST", "/v1/download", {"repo_id": "a/b"}),
    ("POST", "/v1/template/switch", {"prompt_template_name": "chatml"}),
    ("POST", "/v1/templates/switch", {"prompt_template_name": "chatml"}),
    ("POST", "/v1/template/unload", None),
    ("DELETE", "/v1/templates/active", None),
    ("POST", "/v1/model/embedding/load", {"embedding_model_name": "smollm2"}),
    ("POST", "/v1/models/embedding/load", {"embedding_model_name": "smollm2"}),
    ("POST", "/v1/model/embedding/unload", None),
    ("DELETE", "/v1/models/embedding/current", None),
    ("POST", "/v1/lora/load", {"loras": [{"name": "x"}]}),
    ("POST", "/v1/loras/load", {"loras": [{"name": "x"}]}),
    ("POST", "/v1/lora/unload", None),
    ("DELETE", "/v1/loras/active", None),
    ("POST", "/v1/sampling/override/switch", {"overrides": {}}),
    ("POST", "/v1/sampler/overrides/switch", {"overrides": {}}),
    ("POST", "/v1/sampling/override/unload", None),
    ("DELETE", "/v1/sampler/overrides/active", None),
]
READING = [
    "/v1/model",
    "/v1/models/current",
    "/v1/model/list",
    "/props",
    "/v1/model/props",
    "/v1/models/props",
    "/v1/model/draft/list",
    "/v1/models/draft",
    "/v1/template/list",
    "/v1/templates",
    "/v1/model/embedding/list",
    "/v1/models/embedding",
    "/v1/lora/list",
    "/v1/loras",
    "/v1/lora",
    "/v1/loras/active",
    "/v1/sampling/override/list",
    "/v1/sampling/overrides",
    "/v1/sampler/overrides",
    "/v1/auth/permission",
]


async def test_key_rules_on_every_route(make_client) -> None:
    client = await make_client(http=KEYS)
    for method, path, body in MANAGEMENT:
        for headers, status, kind in (
            ({}, 401, "authentication_error"),
            ({"X-Admin-Key": "wrong"}, 401, "authentication_error"),
            (USER, 403, "permission_error"),
            ({"Authorization": "Bearer user-key"}, 403, "permission_error"),
        ):
            answer = await client.request(method, path, json=body, headers=headers)
            error = await answer.json()
            assert answer.status == status and error["error"]["type"] == kind, (path, headers)
            assert error["message"], path
    for path in READING:
        assert (await client.get(path)).status == 401, path
        for headers in (USER, ADMIN, {"Authorization": "Bearer admin-key"}):
            assert (await client.get(path, headers=headers)).status == 200, (path, headers)
    # The admin key passes the gate of every management route (what follows is theirs).
    for method, path, body in MANAGEMENT:
        answer = await client.request(method, path, json=body, headers=ADMIN)
        assert answer.status not in (401, 403), path
