"""OpenAI routes through pytest-aiohttp against the real manager and SmolLM2."""

from __future__ import annotations

import base64
import struct

from tests.helpers import MODEL_ID
from tests.http.conftest import chat_body, sse_events


async def test_models_list_and_type_filter(client) -> None:
    body = await (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    (card,) = body["data"]
    assert card["id"] == MODEL_ID and card["object"] == "model" and card["owned_by"] == "rkllmd"
    assert card["type"] == "chat" and card["name"] and card["loaded"] is True
    assert card["contextLength"] == 8192  # the model's own limit (GGUF header), not n_ctx
    assert (await (await client.get("/v1/models?type=embedding")).json())["data"] == []
    one = await client.get(f"/v1/models/{MODEL_ID}")
    assert (await one.json())["id"] == MODEL_ID
    missing = await client.get("/v1/models/nope")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "model_not_found"


async def test_chat_json(client) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(max_tokens=6, seed=3))
    assert response.status == 200
    body = await response.json()
    assert body["object"] == "chat.completion" and body["model"] == MODEL_ID
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + 6


async def test_chat_sse_shape(client) -> None:
    # Two identical warm-up calls leave the KV cache in the state the streamed
    # call starts from, so greedy decoding must give the same text (cold and
    # warm prompts evaluate with different batch shapes and may differ).
    await client.post("/v1/chat/completions", json=chat_body(max_tokens=8))
    whole = await (await client.post("/v1/chat/completions", json=chat_body(max_tokens=8))).json()
    response = await client.post(
        "/v1/chat/completions",
        json=chat_body(max_tokens=8, stream=True, stream_options={"include_usage": True}),
    )
    assert response.status == 200 and response.headers["Content-Type"].startswith(
        "text/event-stream"
    )
    events = sse_events(await response.text())
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(
        c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks
    )
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 8
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]


async def test_stop_sequence_and_finish_reason(client) -> None:
    await client.post("/v1/chat/completions", json=chat_body("Count to ten.", max_tokens=30))
    free = await (
        await client.post("/v1/chat/completions", json=chat_body("Count to ten.", max_tokens=30))
    ).json()
    text = free["choices"][0]["message"]["content"]
    stop = text[3:5]
    cut = await (
        await client.post(
            "/v1/chat/completions", json=chat_body("Count to ten.", max_tokens=30, stop=stop)
        )
    ).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["message"]["content"] == text[: text.index(stop)]


async def test_completions_json_and_stream(client) -> None:
    body = {
        "model": "smollm2",
        "prompt": "The capital of France is",
        "max_tokens": 5,
        "temperature": 0,
    }
    await client.post("/v1/completions", json=body)
    whole = await (await client.post("/v1/completions", json=body)).json()
    assert whole["object"] == "text_completion" and whole["usage"]["completion_tokens"] == 5
    events = sse_events(
        await (await client.post("/v1/completions", json={**body, "stream": True})).text()
    )
    text = "".join(e["choices"][0]["text"] for e in events[:-1])
    assert text == whole["choices"][0]["text"] and events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "length"


async def test_embeddings_float_and_base64(client) -> None:
    body = {"model": "smollm2", "input": ["hello world", "good morning"]}
    floats = await (await client.post("/v1/embeddings", json=body)).json()
    assert [d["index"] for d in floats["data"]] == [0, 1]
    vector = floats["data"][0]["embedding"]
    packed = await (
        await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    ).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert len(decoded) == len(vector) and abs(decoded[0] - vector[0]) < 1e-6
    assert floats["usage"]["prompt_tokens"] > 0


async def test_empty_embedding_input_is_a_400(client) -> None:
    for text in ("", ["fine", ""]):
        response = await client.post("/v1/embeddings", json={"model": "smollm2", "input": text})
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_params"


async def test_unknown_fields_ignored_invalid_values_rejected(client) -> None:
    ok = await client.post(
        "/v1/chat/completions", json=chat_body(max_tokens=2, user="me", metadata={"a": 1})
    )
    assert ok.status == 200
    for bad in (
        {"temperature": 5},
        {"top_p": -0.1},
        {"n": 9},
        {"max_tokens": 0},
        {"presence_penalty": 3},
        {"logprobs": True, "top_logprobs": 21},
        {"stop": ["x"] * 17},
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        {"messages": []},
        {"response_format": {"type": "json_object"}},
    ):
        response = await client.post("/v1/chat/completions", json={**chat_body(), **bad})
        body = await response.json()
        assert response.status == 400, bad
        assert (
            body["error"]["type"] == "invalid_request_error"
            and body["error"]["code"] == "invalid_params"
        )


async def test_not_json_body(client) -> None:
    response = await client.post(
        "/v1/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_params"


async def test_unknown_route_is_openai_shaped_404(client) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
