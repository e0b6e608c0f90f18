"""Images through every HTTP dialect, into a model that can see: SmolLM2 with a
projector fabricated at test time next to it (tests/fixtures/mmproj.py). The fast
tier's fake backend sees through the same file (16 prompt tokens per image, derived
from its bytes); the full tier runs libmtmd. Both: each image adds its tokens, and
the answer depends on the pixels."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.mmproj import IMAGE_TOKENS, write_mmproj
from tests.fixtures.pictures import BLUE, RED, b64, data_url, jpeg
from tests.helpers import MODEL_ID, place_model
from tests.http.dialects.test_simplechat import VISION_CHAT, VISION_STREAM  # seed 003's

QUESTION = "What is in the picture?"


@pytest.fixture
async def seeing(make_client, smol_dir: Path) -> Any:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    (smol_dir / "plain").mkdir()
    place_model(smol_dir / "plain", "blind.gguf")  # no projector in its folder
    return await make_client(simplechat={"default_vision_model": MODEL_ID})


def openai_body(*urls: str, text: str = QUESTION, **extra: Any) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
    return {
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": text}]}],
        "temperature": 0,
        "max_tokens": 12,
        **extra,
    }


async def openai_chat(client: Any, *urls: str) -> tuple[str, int]:
    response = await client.post("/v1/chat/completions", json=openai_body(*urls))
    body = await response.json()
    assert response.status == 200, body
    return body["choices"][0]["message"]["content"], body["usage"]["prompt_tokens"]


async def test_openai_image_url_parts_reach_the_model(seeing) -> None:  # type: ignore[no-untyped-def]
    red, one = await openai_chat(seeing, data_url(RED))
    blue, _ = await openai_chat(seeing, data_url(BLUE))
    again, _ = await openai_chat(seeing, data_url(RED))
    _, two = await openai_chat(seeing, data_url(RED), data_url(BLUE))
    assert two - one == IMAGE_TOKENS
    assert red != blue and again == red
    jpeg_answer, _ = await openai_chat(seeing, data_url(jpeg(), "image/jpeg"))
    assert jpeg_answer


async def test_openai_streams_with_images(seeing) -> None:  # type: ignore[no-untyped-def]
    whole, _ = await openai_chat(seeing, data_url(BLUE))
    response = await seeing.post(
        "/v1/chat/completions", json=openai_body(data_url(BLUE), stream=True)
    )
    assert response.status == 200
    text = ""
    for block in (await response.text()).split("\n\n"):
        payload = block.removeprefix("data: ").strip()
        if payload and payload != "[DONE]":
            for choice in json.loads(payload)["choices"]:
                text += choice["delta"].get("content") or ""
    assert text == whole


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("http://127.0.0.1:1/cat.png", "http"),
        ("https://example.com/cat.jpg", "https"),
        ("file:///etc/passwd", "file"),
    ],
)
async def test_urls_are_refused_never_fetched(seeing, url: str, scheme: str) -> None:  # type: ignore[no-untyped-def]
    response = await seeing.post("/v1/chat/completions", json=openai_body(url))
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "invalid_image"
    assert error["details"]["url_scheme"] == scheme and "/etc" not in error["message"]


async def test_a_model_without_a_projector_refuses_images(seeing) -> None:  # type: ignore[no-untyped-def]
    body = openai_body(data_url(RED))
    body["model"] = "blind"
    response = await seeing.post("/v1/chat/completions", json=body)
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "model_has_no_vision"
    assert error["details"]["images"] == 1
    # Text alone is served by it.
    body["messages"][0]["content"] = QUESTION
    assert (await seeing.post("/v1/chat/completions", json=body)).status == 200


async def test_limits_are_checked_before_the_model(seeing) -> None:  # type: ignore[no-untyped-def]
    response = await seeing.post("/v1/chat/completions", json=openai_body(*[data_url(RED)] * 9))
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "invalid_image"
    assert error["details"]["limit"] == 8
    response = await seeing.post(
        "/v1/chat/completions", json=openai_body("data:image/png;base64,AAAA")
    )
    assert (await response.json())["error"]["code"] == "invalid_image"


# --- the simple chat dialect (seed 003), Ollama, Responses, TabbyAPI ----------------


def filled(body: dict[str, Any], data: bytes, mime: str = "image/jpeg") -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    for image in body["messages"][0]["images"]:
        image["data_base64"] = b64(data)
        image["mime_type"] = mime
    return body


async def test_seed_vision_examples_as_written(seeing) -> None:  # type: ignore[no-untyped-def]
    response = await seeing.post("/chat/vision", json=filled(VISION_CHAT, jpeg()))
    answer = await response.json()
    assert response.status == 200, answer
    assert answer["model"] == MODEL_ID and answer["content"] and answer["predicted_tokens"] > 0
    response = await seeing.post("/chat/vision/stream", json=filled(VISION_STREAM, jpeg()))
    lines = [json.loads(line) for line in (await response.text()).splitlines()]
    assert response.status == 200 and lines[-1]["type"] == "done"
    assert {line["type"] for line in lines[:-1]} == {"fragment"}
    models = await (await seeing.get("/models")).json()
    assert models["models"][0]["vision"] is True


async def test_simple_chat_sees_the_pixels(seeing) -> None:  # type: ignore[no-untyped-def]
    def greedy(data: bytes) -> dict[str, Any]:
        body = filled(VISION_CHAT, data, "image/png")
        body["config"] = {"temperature": 0, "maxTokens": 12}
        return body

    answers = []
    for data in (RED, BLUE, RED):
        for path in ("/chat", "/chat/vision"):
            response = await seeing.post(path, json=greedy(data))
            answers.append((await response.json())["content"])
    assert answers[0] == answers[1] == answers[4] == answers[5]
    assert answers[2] != answers[0]


async def test_ollama_images(seeing) -> None:  # type: ignore[no-untyped-def]
    async def chat(*images: bytes) -> dict[str, Any]:
        message = {"role": "user", "content": QUESTION, "images": [b64(i) for i in images]}
        body = {"model": MODEL_ID, "messages": [message], "stream": False}
        body["options"] = {"temperature": 0, "num_predict": 12}
        return await (await seeing.post("/api/chat", json=body)).json()  # type: ignore[no-any-return]

    one, two = await chat(RED), await chat(RED, BLUE)
    assert two["prompt_eval_count"] - one["prompt_eval_count"] == IMAGE_TOKENS
    assert (await chat(BLUE))["message"]["content"] != one["message"]["content"]
    body = {"model": MODEL_ID, "prompt": QUESTION, "images": [b64(RED)], "stream": False}
    body["options"] = {"temperature": 0, "num_predict": 12}
    generated = await (await seeing.post("/api/generate", json=body)).json()
    assert generated["response"] and generated["prompt_eval_count"] > IMAGE_TOKENS
    raw = await seeing.post("/api/generate", json={**body, "raw": True})
    assert raw.status == 400


async def test_responses_input_image(seeing) -> None:  # type: ignore[no-untyped-def]
    async def ask(*images: bytes) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [
            {"type": "input_image", "image_url": data_url(i)} for i in images
        ]
        parts.append({"type": "input_text", "text": QUESTION})
        body = {
            "model": MODEL_ID,
            "input": [{"type": "message", "role": "user", "content": parts}],
            "temperature": 0,
            "max_output_tokens": 12,
        }
        response = await seeing.post("/v1/responses", json=body)
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]

    one, two = await ask(RED), await ask(RED, BLUE)
    assert two["usage"]["input_tokens"] - one["usage"]["input_tokens"] == IMAGE_TOKENS


async def test_tabby_card_says_use_vision(seeing) -> None:  # type: ignore[no-untyped-def]
    card = await (await seeing.get("/v1/model")).json()
    assert card["parameters"]["use_vision"] is True


async def test_the_projector_is_not_listed_as_a_model(seeing) -> None:  # type: ignore[no-untyped-def]
    listed = await (await seeing.get("/v1/models")).json()
    ids = {card["id"] for card in listed["data"]}
    assert MODEL_ID in ids and not any("mmproj" in i.lower() for i in ids)
