"""The separate embedding model: a second resident model in its own worker, beside the
chat model, through TabbyAPI's routes (both families), /v1/embeddings and /metrics."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.helpers import MODEL_ID
from tests.http.conftest import chat_body, manager_of
from tests.http.dialects.tabby.conftest import LOAD_RESPONSE, decodes_as, decodes_card

EMBEDDER = "embedder"


def _add_embedder(models_dir: Path, typed: bool = False) -> None:
    """A second model file (the same weights under another name) for the embedding slot."""
    path = models_dir / f"{EMBEDDER}.gguf"
    os.link(models_dir / f"{MODEL_ID}.gguf", path)
    os.utime(path, (1, 1))
    if typed:
        (models_dir / f"{EMBEDDER}.rkllmd.json").write_text(json.dumps({"type": "embedding"}))


@pytest.fixture
async def two_models(make_client, smol_dir: Path):  # type: ignore[no-untyped-def]
    _add_embedder(smol_dir)
    return await make_client()


@pytest.mark.parametrize(
    ("load", "current", "unload"),
    [
        ("/v1/model/embedding/load", "/v1/model/embedding", ("POST", "/v1/model/embedding/unload")),
        (
            "/v1/models/embedding/load",
            "/v1/models/embedding/current",
            ("DELETE", "/v1/models/embedding/current"),
        ),
    ],
)
async def test_load_show_unload(two_models, load, current, unload) -> None:  # type: ignore[no-untyped-def]
    client = two_models
    chat_pid = manager_of(client).status().worker_pid
    missing = await client.get(current)
    assert missing.status == 400 and (await missing.json())["error"]["code"] == "no_model_loaded"

    answer = await client.post(
        load, json={"embedding_model_name": EMBEDDER, "embeddings_device": "cuda:0"}
    )
    body = await answer.json()
    assert answer.status == 200, body
    decodes_as(body, LOAD_RESPONSE)
    assert body["model_type"] == "embedding_model" and body["status"] == "finished"
    assert [n for n in body["notes"] if "embeddings_device" in n]
    card = await (await client.get(current)).json()
    decodes_card(card)
    assert card["id"] == EMBEDDER

    status = manager_of(client).status()
    assert status.model == MODEL_ID and status.worker_pid == chat_pid  # the chat model stays
    assert status.embedding is not None and status.embedding.worker_pid != chat_pid
    props = await (await client.get("/v1/models/props")).json()
    assert props["model"] == MODEL_ID and props["embedding_model"] == EMBEDDER
    metrics = await (await client.get("/metrics")).text()
    assert "rkllmd_embedding_model_loaded 1.0" in metrics
    listed = await (await client.get("/v1/models/embedding")).json()
    assert {c["id"] for c in listed["data"]} == {MODEL_ID, EMBEDDER}

    assert (await client.request(*unload)).status == 200
    status = manager_of(client).status()
    assert status.embedding is None and status.worker_pid == chat_pid
    assert "rkllmd_embedding_model_loaded 0.0" in await (await client.get("/metrics")).text()


async def test_unloading_the_chat_model_keeps_the_embedding_model(two_models) -> None:
    client = two_models
    await client.post("/v1/models/embedding/load", json={"embedding_model_name": EMBEDDER})
    assert (await client.delete("/v1/models/current")).status == 200
    status = manager_of(client).status()
    assert status.model is None and status.embedding is not None
    answer = await client.post("/v1/embeddings", json={"input": "hello"})
    assert answer.status == 200 and (await answer.json())["model"] == EMBEDDER


async def test_embeddings_use_the_slot_the_request_names(two_models) -> None:
    client = two_models
    await client.post("/v1/models/embedding/load", json={"embedding_model_name": EMBEDDER})
    chat_pid = manager_of(client).status().worker_pid
    for model, served_by in ((EMBEDDER, EMBEDDER), (None, EMBEDDER), ("smollm2", MODEL_ID)):
        body = {"input": ["one", "two"], **({"model": model} if model else {})}
        answer = await (await client.post("/v1/embeddings", json=body)).json()
        assert answer["model"] == served_by and len(answer["data"]) == 2, model
    assert manager_of(client).status().worker_pid == chat_pid


async def test_the_embedding_slot_serves_while_a_chat_streams(two_models) -> None:
    client = two_models
    await client.post("/v1/models/embedding/load", json={"embedding_model_name": EMBEDDER})
    body = chat_body(stream=True, max_tokens=100_000, ignore_eos=True)
    stream = await client.post("/v1/chat/completions", json=body)
    try:
        assert (await stream.content.readline()).startswith(b"data: ")  # generating now
        manager = manager_of(client)
        answer = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hi"})
        assert answer.status == 200 and (await answer.json())["model"] == EMBEDDER
        # The chat model's only slot was busy all along: the embedding did not wait for it.
        assert manager.state.value == "generating"
    finally:
        stream.close()


async def test_a_model_typed_embedding_loads_into_the_embedding_slot(
    make_client, smol_dir: Path
) -> None:
    _add_embedder(smol_dir, typed=True)
    client = await make_client()
    answer = await client.post("/v1/embeddings", json={"model": EMBEDDER, "input": "hi"})
    assert answer.status == 200 and (await answer.json())["model"] == EMBEDDER
    status = manager_of(client).status()
    assert status.model == MODEL_ID and status.embedding is not None
    assert status.embedding.entry.id == EMBEDDER


async def test_load_errors(two_models, smol_dir: Path) -> None:
    client = two_models
    unknown = await client.post("/v1/models/embedding/load", json={"embedding_model_name": "no"})
    assert unknown.status == 404
    empty = await client.post("/v1/model/embedding/load", json={})
    assert empty.status == 400
    assert (await empty.json())["error"]["param"] == "embedding_model_name"
    npu = smol_dir / "npu.rkllm"
    npu.write_bytes(b"RKLLM" + bytes(64))
    os.utime(npu, (1, 1))
    await manager_of(client)._registry.scan()
    refused = await client.post("/v1/models/embedding/load", json={"embedding_model_name": "npu"})
    body = await refused.json()
    assert refused.status == 400 and body["error"]["code"] == "unsupported_model_format"
    assert "GGUF" in body["message"]
    assert manager_of(client).status().embedding is None


async def test_a_crashed_embedding_worker_leaves_the_chat_model_serving(two_models) -> None:
    client = two_models
    await client.post("/v1/models/embedding/load", json={"embedding_model_name": EMBEDDER})
    manager = manager_of(client)
    status = manager.status()
    assert status.embedding is not None
    os.kill(status.embedding.worker_pid, signal.SIGKILL)
    for _ in range(200):
        if manager.status().embedding is None:
            break
        await asyncio.sleep(0.05)
    status = manager.status()
    assert status.embedding is None and status.state.value == "ready"
    chat = await client.post("/v1/chat/completions", json=chat_body(max_tokens=2))
    assert chat.status == 200


async def test_keep_alive_unloads_the_idle_chat_model_only(make_client, smol_dir: Path) -> None:
    """The embedding model stays until it is unloaded, as in TabbyAPI: the idle
    keep-alive (``generation.keep_alive_seconds``) and Ollama's per-request
    ``keep_alive`` are the chat model's."""
    _add_embedder(smol_dir)
    client = await make_client(generation={"keep_alive_seconds": 0.2})
    await client.post("/v1/models/embedding/load", json={"embedding_model_name": EMBEDDER})
    manager = manager_of(client)
    async with asyncio.timeout(120):  # a condition, not a timing: the idle unload happens
        while manager.status().model is not None:
            await asyncio.sleep(0.05)
    assert manager.status().embedding is not None
    for keep_alive in (0, "0s"):
        body = {"model": EMBEDDER, "input": "hello", "keep_alive": keep_alive}
        answer = await client.post("/api/embed", json=body)
        assert answer.status == 200, await answer.text()
    status = manager.status()
    assert status.embedding is not None and status.embedding.entry.id == EMBEDDER
    assert status.model is None  # embedding requests never brought the chat model back
