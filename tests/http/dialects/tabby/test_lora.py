"""TabbyAPI's LoRA routes, both families: the lora/ folder, applying and removing
adapters on the resident model (a reload with the same options), and their effect."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import FAKE_BACKEND
from tests.helpers import MODEL_FILE, MODEL_ID
from tests.http.conftest import chat_body, manager_of
from tests.http.dialects.tabby.conftest import ADMIN, KEYS, MODEL_CARD, USER, decodes_as


def _adapters(models_dir: Path, *names: str) -> Path:
    folder = models_dir / "lora"
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"GGUF" + bytes(60))
        os.utime(folder / name, (1, 1))
    return folder


@pytest.mark.parametrize(
    ("listing", "active", "load", "unload"),
    [
        ("/v1/lora/list", "/v1/lora", "/v1/lora/load", ("POST", "/v1/lora/unload")),
        ("/v1/loras", "/v1/loras/active", "/v1/loras/load", ("DELETE", "/v1/loras/active")),
    ],
)
async def test_list_apply_remove(  # type: ignore[no-untyped-def]
    make_client, smol_dir: Path, request, listing, active, load, unload
) -> None:
    folder = _adapters(smol_dir, "style.gguf", "npu-style.rkllm", ".hidden.gguf", "notes.txt")
    if not FAKE_BACKEND:  # llama.cpp reads the adapter: a real one (that changes nothing)
        os.unlink(folder / "style.gguf")
        os.link(request.getfixturevalue("gguf_adapters") / "zero.gguf", folder / "style.gguf")
    client = await make_client(http=KEYS)
    listed = await (await client.get(listing, headers=ADMIN)).json()
    assert listed["object"] == "list" and [c["id"] for c in listed["data"]] == [
        "npu-style",
        "style",
    ]
    for card in listed["data"]:
        decodes_as(card, {**MODEL_CARD, "scaling": float})
    models = await (await client.get("/v1/models", headers=USER)).json()
    assert [m["id"] for m in models["data"]] == [MODEL_ID]  # adapters are not models
    assert (await (await client.get(active, headers=USER)).json())["data"] == []

    pid = manager_of(client).status().worker_pid
    answer = await client.post(
        load,
        json={
            "loras": [{"name": "style", "scaling": 0.5}, {"name": "npu-style"}, {"name": "nope"}]
        },
        headers=ADMIN,
    )
    body = await answer.json()
    assert answer.status == 200 and body == {"success": ["style"], "failure": ["npu-style", "nope"]}
    status = manager_of(client).status()
    assert status.worker_pid != pid and status.resident is not None  # reloaded with it
    assert status.resident.options.loras == (("style", 0.5),)
    applied = await (await client.get(active, headers=USER)).json()
    assert [(c["id"], c["scaling"]) for c in applied["data"]] == [("style", 0.5)]
    # An API key sees the applied adapters only.
    assert [c["id"] for c in (await (await client.get(listing, headers=USER)).json())["data"]] == [
        "style"
    ]
    assert (await client.request(*unload, headers=ADMIN)).status == 200
    resident = manager_of(client).status().resident
    assert resident is not None and resident.options.loras == ()


async def test_errors_and_keys(make_client, smol_dir: Path) -> None:
    _adapters(smol_dir, "style.gguf")
    client = await make_client(http=KEYS)
    body = {"loras": [{"name": "style"}]}
    assert (await client.post("/v1/loras/load", json=body, headers=USER)).status == 403
    assert (await client.delete("/v1/loras/active", headers=USER)).status == 403
    assert (await client.get("/v1/loras")).status == 401
    for bad in (
        {},
        {"loras": []},
        {"loras": [{"scaling": 1}]},
        {"loras": [{"name": "x", "scaling": "1"}]},
    ):
        assert (await client.post("/v1/loras/load", json=bad, headers=ADMIN)).status == 400, bad
    idle = await make_client(load=False)
    answer = await idle.post("/v1/loras/load", json=body)
    assert answer.status == 400 and (await answer.json())["error"]["code"] == "no_model_loaded"
    assert (await idle.get("/v1/loras/active")).status == 400


@pytest.fixture(scope="module")
def gguf_adapters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.lora import write_gguf_lora
    from tests.helpers import model_source

    folder = tmp_path_factory.mktemp("adapters")
    write_gguf_lora(folder / "zero.gguf", model_source(), magnitude=0.0)
    write_gguf_lora(folder / "strong.gguf", model_source(), magnitude=1.0)
    return folder


@pytest.mark.real_model
async def test_a_zero_adapter_keeps_greedy_output_and_a_real_one_changes_it(
    make_client, smol_dir: Path, gguf_adapters: Path
) -> None:
    (smol_dir / "lora").mkdir()
    for name in ("zero.gguf", "strong.gguf"):
        os.link(gguf_adapters / name, smol_dir / "lora" / name)
    client = await make_client()

    async def reply() -> str:
        body = chat_body("Name three colours", max_tokens=12, seed=1)
        answer = await (await client.post("/v1/chat/completions", json=body)).json()
        return str(answer["choices"][0]["message"]["content"])

    base = await reply()
    for name, same in (("zero", True), ("strong", False)):
        await client.delete("/v1/loras/active")
        answer = await client.post("/v1/loras/load", json={"loras": [{"name": name}]})
        assert (await answer.json())["success"] == [name]
        assert (await reply() == base) is same, name
    await client.delete("/v1/loras/active")
    assert await reply() == base


@pytest.mark.real_model
async def test_an_adapter_llama_cpp_refuses_fails_and_the_model_stays(
    make_client, smol_dir: Path
) -> None:
    _adapters(smol_dir, "broken.gguf")  # a GGUF header and nothing else
    client = await make_client()
    answer = await client.post("/v1/loras/load", json={"loras": [{"name": "broken"}]})
    body = await answer.json()
    assert answer.status == 200 and body["failure"] == ["broken"] and "broken" in body["message"]
    status = manager_of(client).status()
    assert status.model == MODEL_ID and status.state.value == "ready"
    assert (smol_dir / MODEL_FILE).exists()
