"""Model cards without loading anything: every card has name, description, contextLength
and type (the frontend model-info seed, ../shared/seeds/002_*), from the GGUF header,
the owner's sidecar, a pulled repo's meta.json/config.json, or an .rkllm file name; and
the ``?type=`` filter."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rkllmd.http.services import SERVICES

from tests.helpers import MODEL_ID, place_model

SETTLED = time.time() - 60
GEMMA = "google_gemma-3-270m-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588"
FRONTEND_FIELDS = {"id", "name", "description", "contextLength"}


def settled(path: Path) -> Path:
    os.utime(path, (SETTLED, SETTLED))
    return path


def rkllm(folder: Path, name: str, size: int = 4096) -> Path:
    """An .rkllm file: its bytes do not matter to the catalogue, only its name."""
    return settled_file(folder / name, b"\x00" * size)


def settled_file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return settled(path)


def hub_folder(models_dir: Path, files: dict[str, Any]) -> Path:
    """A pulled-looking repo folder with Hub technical files."""
    folder = models_dir / "acme" / "repo"
    for name, content in files.items():
        settled_file(folder / name, json.dumps(content).encode())
    return folder


async def cards(client: Any, query: str = "") -> dict[str, dict[str, Any]]:
    response = await client.get(f"/v1/models{query}")
    assert response.status == 200
    return {c["id"]: c for c in (await response.json())["data"]}


async def test_gguf_without_a_sidecar_is_described_by_its_header(make_client) -> None:
    client = await make_client(load=False)
    card = (await cards(client))[MODEL_ID]
    assert card.keys() >= FRONTEND_FIELDS
    assert card["name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # general.name, as the file says
    assert card["contextLength"] == 8192  # llama.context_length, nothing loaded
    assert card["type"] == "chat" and card["loaded"] is False
    assert card["description"] == (
        "Llama chat model, 135M parameters, Q4_1, GGUF (CPU, llama.cpp), 8192-token context, 94 MiB"
    )
    one = await (await client.get(f"/v1/models/{MODEL_ID}")).json()
    assert {k: one[k] for k in FRONTEND_FIELDS} == {k: card[k] for k in FRONTEND_FIELDS}


async def test_sidecar_names_and_describes_but_the_header_knows_the_context(
    make_client, smol_dir: Path
) -> None:
    (smol_dir / f"{MODEL_ID}.rkllmd.json").write_text(
        json.dumps(
            {
                "name": "My Embedder",
                "description": "Embeds",
                "type": "embedding",
                "context_length": 512,
            }
        )
    )
    client = await make_client(load=False)
    card = (await cards(client))[MODEL_ID]
    assert (card["name"], card["description"], card["type"]) == (
        "My Embedder",
        "Embeds",
        "embedding",
    )
    assert card["contextLength"] == 8192  # the file itself is trusted over the sidecar

    tabby = {c["id"]: c for c in (await (await client.get("/v1/model/list")).json())["data"]}
    assert tabby[MODEL_ID]["name"] == "My Embedder"


async def test_rkllm_cards_from_the_file_name_sidecar_and_hub_files(
    make_client, models_dir: Path
) -> None:
    rkllm(models_dir, f"{GEMMA}.rkllm", 616 * 2**20 // 64)
    rkllm(models_dir, "plain.rkllm")
    settled_file(models_dir / "plain.rkllmd.json", json.dumps({"context_length": 2048}).encode())
    folder = hub_folder(
        models_dir,
        {
            "config.json": {
                "architectures": ["Qwen2ForCausalLM"],
                "max_position_embeddings": 32768,
            },
            "meta.json": {"name": "Qwen 2.5 0.5B", "description": "Converted for the NPU"},
        },
    )
    rkllm(folder, "Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.rkllm")
    rkllm(folder, "Qwen2.5-0.5B-Instruct-rk3588-w8a8-ctx4096.rkllm")
    client = await make_client(load=False)
    found = await cards(client)

    gemma = found[GEMMA]
    assert gemma["name"] == "google gemma 3 270m"  # the id made readable
    assert gemma["contextLength"] == 16384  # ctx16384 in the name
    assert gemma["description"] == (
        "Chat model, 270M parameters, W8A8, RKLLM for the RK3588, 3 NPU cores, "
        "16384-token context, 10 MiB"
    )
    assert found["plain"]["contextLength"] == 2048  # the sidecar, nothing else knows

    hub = found["Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0"]
    assert (hub["name"], hub["description"]) == ("Qwen 2.5 0.5B", "Converted for the NPU")
    assert hub["contextLength"] == 32768 and hub["type"] == "chat"  # config.json
    # The conversion's limit in the name caps what the original model's config says.
    assert found["Qwen2.5-0.5B-Instruct-rk3588-w8a8-ctx4096"]["contextLength"] == 4096
    for card in (c for c in found.values() if c["id"] != MODEL_ID):
        assert card["format"] == "rkllm" and card["loaded"] is False
        assert isinstance(card["name"], str) and card["name"]
        assert isinstance(card["description"], str) and card["description"]


async def test_type_filter(make_client, smol_dir: Path) -> None:
    settled(place_model(smol_dir, "speechy.gguf"))
    (smol_dir / "speechy.rkllmd.json").write_text(json.dumps({"type": "speech"}))
    settled(place_model(smol_dir, "drafty.gguf"))
    (smol_dir / "drafty.rkllmd.json").write_text(json.dumps({"type": "draft"}))
    settled(place_model(smol_dir, "painter.gguf"))
    (smol_dir / "painter.rkllmd.json").write_text(json.dumps({"type": "image"}))
    settled(place_model(smol_dir, "embedder.gguf"))
    (smol_dir / "embedder.rkllmd.json").write_text(json.dumps({"type": "embedding"}))
    client = await make_client(load=False)

    assert list(await cards(client, "?type=chat")) == [MODEL_ID]
    assert list(await cards(client, "?type=speech")) == ["speechy"]
    assert list(await cards(client, "?type=image")) == ["painter"]
    assert list(await cards(client, "?type=draft")) == ["drafty"]
    assert list(await cards(client, "?type=embedding")) == ["embedder"]
    assert len(await cards(client)) == 5

    bad = await client.get("/v1/models?type=bogus")
    assert bad.status == 400
    error = (await bad.json())["error"]
    assert (error["code"], error["param"]) == ("invalid_params", "type")
    assert "chat, embedding, image, speech, draft" in error["message"]


async def test_the_cached_list_follows_loads_and_new_files(make_client, smol_dir: Path) -> None:
    client = await make_client(load=False)
    assert (await cards(client))[MODEL_ID]["loaded"] is False
    assert (await cards(client))[MODEL_ID]["loaded"] is False  # served from the cache
    manager = client.server.app[SERVICES].manager
    await manager.load(MODEL_ID)
    assert (await cards(client))[MODEL_ID]["loaded"] is True
    assert (await cards(client, "?type=chat"))[MODEL_ID]["loaded"] is True
    settled(place_model(smol_dir, "second.gguf"))
    await client.server.app[SERVICES].registry.scan()
    assert set(await cards(client)) == {MODEL_ID, "second"}
    await manager.unload()
    assert not any(c["loaded"] for c in (await cards(client)).values())
