"""OpenAI routes through pytest-aiohttp against the real manager and SmolLM2."""

from __future__ import annotations

import base64
import json
import math
import struct

import pytest

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
        {"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]},
        {"messages": []},
        {"response_format": {"type": "xml"}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
        {"tool_choice": "required"},  # no tools to choose from
    ):
        response = await client.post("/v1/chat/completions", json={**chat_body(), **bad})
        body = await response.json()
        assert response.status == 400, bad
        assert (
            body["error"]["type"] == "invalid_request_error"
            and body["error"]["code"] == "invalid_params"
        )


PNG_1X1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"
        "0000000c4944415408d763f8cfc000000301010018dd8db00000000049454e44ae426082"
    )
).decode()


async def test_image_parts_say_the_model_has_no_vision(client) -> None:
    def with_image(url: str) -> dict:  # type: ignore[type-arg]
        parts = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}},
        ]
        return chat_body(messages=[{"role": "user", "content": parts}])

    response = await client.post(
        "/v1/chat/completions", json=with_image(f"data:image/png;base64,{PNG_1X1}")
    )
    error = (await response.json())["error"]
    assert response.status == 400 and error["code"] == "model_has_no_vision"
    assert "image" in error["message"] and "valid string" not in error["message"]
    broken = await client.post(
        "/v1/chat/completions", json=with_image("data:image/png;base64,AAAA")
    )
    assert broken.status == 400 and (await broken.json())["error"]["code"] == "invalid_image"


async def test_null_means_not_set(client) -> None:
    nulls = dict.fromkeys(
        (
            "temperature",
            "top_p",
            "n",
            "presence_penalty",
            "frequency_penalty",
            "max_tokens",
            "max_completion_tokens",
            "seed",
            "stop",
            "stream",
            "stream_options",
            "logprobs",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "user",
            "metadata",
        )
    )
    sent = {**chat_body(max_tokens=3), **nulls, "max_tokens": 3}
    response = await client.post("/v1/chat/completions", json=sent)
    assert response.status == 200, await response.text()
    assert (await response.json())["usage"]["completion_tokens"] <= 3
    text = {
        "model": "smollm2",
        "prompt": "Hi",
        "max_tokens": 2,
        **dict.fromkeys(("echo", "suffix", "top_p", "temperature")),
    }
    assert (await client.post("/v1/completions", json=text)).status == 200
    embed = {"model": "smollm2", "input": "hi", "encoding_format": None, "dimensions": None}
    assert (await client.post("/v1/embeddings", json=embed)).status == 200


async def test_unsupported_schema_features_are_named(client) -> None:
    for schema, keyword in (
        ({"type": "object", "not": {"required": ["a"]}}, "not"),
        ({"type": "object", "patternProperties": {"^x": {}}}, "patternProperties"),
        ({"$ref": "https://example.com/schema.json"}, "$ref"),
    ):
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        response = await client.post("/v1/chat/completions", json=chat_body(response_format=fmt))
        error = (await response.json())["error"]
        assert response.status == 400 and error["code"] == "unsupported_schema", schema
        assert keyword in error["message"]
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}
    response = await client.post("/v1/chat/completions", json=chat_body(response_format=bad))
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_params"


async def test_not_json_body(client) -> None:
    response = await client.post(
        "/v1/chat/completions", data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_params"


async def test_unknown_route_is_openai_shaped_404(client) -> None:
    response = await client.get("/v1/nothing-here")
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"


async def test_embedding_inputs_token_ids_and_base64(client) -> None:
    async def embed(**body):  # type: ignore[no-untyped-def]
        return await client.post("/v1/embeddings", json={"model": "smollm2", **body})

    one = await (await embed(input=[5, 6, 7])).json()
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] >= 1
    two = await (await embed(input=[[5, 6], [7]])).json()
    assert [d["index"] for d in two["data"]] == [0, 1]
    floats = two["data"][0]["embedding"]
    packed = await (await embed(input=[[5, 6], [7]], encoding_format="base64")).json()
    raw = base64.b64decode(packed["data"][0]["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    assert decoded == pytest.approx(floats, abs=1e-6)
    for bad, code in (
        ([10**9], "unsupported_by_model"),  # outside this model's vocabulary
        ([[]], "invalid_params"),
        ([-1], "invalid_params"),
        ([[1], "text"], "invalid_params"),
        ([[False]], "invalid_params"),  # JSON booleans are not token ids
        ([True, 5], "invalid_params"),
    ):
        response = await embed(input=bad)
        assert response.status == 400, bad
        assert (await response.json())["error"]["code"] == code, bad


async def test_embedding_dimensions_need_matryoshka_metadata(make_client, smol_dir) -> None:
    client = await make_client()
    native = len(
        (await (await client.post("/v1/embeddings", json={"input": "hi"})).json())["data"][0][
            "embedding"
        ]
    )
    same = await client.post("/v1/embeddings", json={"input": "hi", "dimensions": native})
    assert same.status == 200
    refused = await client.post("/v1/embeddings", json={"input": "hi", "dimensions": 64})
    error = (await refused.json())["error"]
    assert refused.status == 400 and error["code"] == "unsupported_by_model"
    assert error["param"] == "dimensions" and str(native) in error["message"]

    (smol_dir / f"{MODEL_ID}.rkllmd.json").write_text(json.dumps({"matryoshka": True}))
    trained = await make_client()
    short = await (
        await trained.post("/v1/embeddings", json={"input": "hi", "dimensions": 64})
    ).json()
    vector = short["data"][0]["embedding"]
    assert len(vector) == 64 and math.isclose(math.fsum(v * v for v in vector), 1.0, rel_tol=1e-6)
    too_big = await trained.post("/v1/embeddings", json={"input": "hi", "dimensions": native + 1})
    assert too_big.status == 400


async def test_completion_prompt_forms_echo_and_suffix(client) -> None:
    async def complete(**body):  # type: ignore[no-untyped-def]
        sent = {"model": "smollm2", "max_tokens": 3, "temperature": 0, **body}
        return await client.post("/v1/completions", json=sent)

    ids = await complete(prompt=[5, 6, 7])
    assert ids.status == 200 and (await ids.json())["usage"]["prompt_tokens"] == 3
    assert (await complete(prompt=[[5, 6, 7]])).status == 200
    echoed = await (await complete(prompt="Once upon a time", echo=True)).json()
    assert echoed["choices"][0]["text"].startswith("Once upon a time")
    stream = await complete(prompt="Once upon a time", echo=True, stream=True)
    first = sse_events(await stream.text())[0]
    assert first["choices"][0]["text"] == "Once upon a time"
    for body, code, param in (
        ({"prompt": [5, 6], "echo": True}, "invalid_params", "echo"),
        ({"prompt": "def f():", "suffix": "return 1"}, "unsupported_by_model", "suffix"),
        ({"prompt": [10**9]}, "unsupported_by_model", None),
        ({"prompt": [[False]]}, "invalid_params", None),  # JSON booleans are not token ids
    ):
        response = await complete(**body)
        error = (await response.json())["error"]
        assert response.status == 400 and error["code"] == code, body
        if param:
            assert param in error["message"]


async def test_structured_reply_without_grammar_fails_after_retries(
    make_client, monkeypatch
) -> None:
    """The fake backend has no grammar and answers in words: every attempt fails its
    check, so the request fails by name with the last attempt, never a 200."""
    monkeypatch.setenv("_RKLLMD_TEST_BACKEND", "fake")
    client = await make_client(structured={"retries": 1})
    fmt = {"type": "json_object"}
    response = await client.post("/v1/chat/completions", json=chat_body(response_format=fmt))
    error = (await response.json())["error"]
    assert response.status == 422 and error["code"] == "structured_output_failed"
    assert error["details"]["attempts"] == 2 and error["details"]["last_attempt"]
    # Streamed too: without a grammar the reply is checked before the first byte.
    stream = await client.post(
        "/v1/chat/completions", json=chat_body(response_format=fmt, stream=True)
    )
    assert stream.status == 422
    assert (await stream.json())["error"]["code"] == "structured_output_failed"
