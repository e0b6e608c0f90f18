"""Ollama's routes in-process (fast tier too): names, errors, mapping of its fields."""

from __future__ import annotations

import math

import pytest
from rkllmd import errors as e
from rkllmd.http.dialects.ollama_models import hub_reference, pull_progress, split_tag
from rkllmd.http.dialects.ollama_options import keep_alive_seconds

from tests.helpers import MODEL_ID


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (300, 300.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("-1", math.inf),
        (-1, math.inf),
    ],
)
def test_keep_alive_forms(value: object, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds  # type: ignore[arg-type]


def test_bad_keep_alive_and_names() -> None:
    with pytest.raises(e.InvalidParams):
        keep_alive_seconds("soon")
    assert split_tag("smollm2:latest") == ("smollm2", "latest")
    assert split_tag("owner/repo") == ("owner/repo", None)
    assert hub_reference("hf.co/owner/repo:Q4_K_M") == ("owner/repo", "Q4_K_M")
    assert hub_reference("hf.co/owner/repo:latest") == ("owner/repo", None)
    for bad in ("hf.co/repo", "hf.co/owner/repo:Q4*"):
        with pytest.raises(e.InvalidParams):
            hub_reference(bad)


def test_pull_progress_shape() -> None:
    assert pull_progress({"stage": "resolving"}) == {"status": "pulling manifest"}
    event = {"stage": "downloading", "file": "m.gguf", "file_bytes": 5, "file_total": 9}
    assert pull_progress(event) == {
        "status": "pulling m.gguf",
        "digest": "m.gguf",
        "total": 9,
        "completed": 5,
    }
    assert pull_progress({"stage": "publishing"}) == {"status": "writing manifest"}


async def test_tags_names_and_ollama_errors(client) -> None:
    tags = await (await client.get("/api/tags")).json()
    assert [m["name"] for m in tags["models"]] == [f"{MODEL_ID}:latest"]
    for name in ("smollm2", "smollm2:latest", f"{MODEL_ID}:latest", "smollm2:q4_1"):
        shown = await client.post("/api/show", json={"model": name})
        assert shown.status == 200, name
    missing = await client.post("/api/show", json={"model": "nope:7b"})
    assert missing.status == 404 and (await missing.json())["code"] == "model_not_found"
    bad = await client.post("/api/chat", json={"model": "smollm2", "messages": "x"})
    assert bad.status == 400 and isinstance((await bad.json())["error"], str)
    unknown = await client.get("/api/nothing")
    assert unknown.status == 404 and isinstance((await unknown.json())["error"], str)
    template = await client.post(
        "/api/generate", json={"model": "smollm2", "prompt": "x", "template": "{{ .Prompt }}"}
    )
    assert template.status == 400 and "template" in (await template.json())["error"]


async def test_chat_stream_shape(client) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "hi"}],
        "options": {"num_predict": 4, "temperature": 0},
    }
    response = await client.post("/api/chat", json=body)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    import json

    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert all(not line["done"] for line in lines[:-1]) and lines[-1]["done"] is True
    last = lines[-1]
    assert last["eval_count"] <= 4 and last["done_reason"] in ("stop", "length")
    for key in (
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ):
        assert isinstance(last[key], int) and last[key] >= 0, key
    whole = await (await client.post("/api/chat", json={**body, "stream": False})).json()
    assert whole["done"] and whole["message"]["role"] == "assistant"
