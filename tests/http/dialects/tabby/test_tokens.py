"""TabbyAPI's token routes, both families: the resident model's tokenizer."""

from __future__ import annotations

import pytest

from tests.http.conftest import chat_body
from tests.http.dialects.tabby.conftest import ADMIN, KEYS, USER, decodes_as

ENCODE = ["/v1/token/encode", "/v1/tokens/encode"]
DECODE = ["/v1/token/decode", "/v1/tokens/decode"]


@pytest.mark.parametrize(("encode", "decode"), list(zip(ENCODE, DECODE, strict=True)))
async def test_encode_then_decode(client, encode: str, decode: str) -> None:
    text = "The quick brown fox jumps"
    answer = await client.post(encode, json={"text": text, "add_bos_token": False})
    body = await answer.json()
    assert answer.status == 200, body
    decodes_as(body, {"length": int})
    assert body["length"] == len(body["tokens"]) > 1
    assert all(isinstance(t, int) and not isinstance(t, bool) for t in body["tokens"])
    with_bos = await (await client.post(encode, json={"text": text})).json()
    # TabbyAPI's default adds the BOS token, where the model has one (SmolLM2 has none).
    assert with_bos["tokens"][-body["length"] :] == body["tokens"]
    back = await (await client.post(decode, json={"tokens": body["tokens"]})).json()
    assert back["text"].strip() == text


async def test_messages_are_encoded_as_the_chat_prompt(client) -> None:
    messages = chat_body()["messages"]
    encoded = await (await client.post("/v1/tokens/encode", json={"text": messages})).json()
    chat = await (await client.post("/v1/chat/completions", json=chat_body(max_tokens=1))).json()
    assert encoded["length"] == chat["usage"]["prompt_tokens"]


async def test_errors(make_client) -> None:
    client = await make_client()
    for path, body in (
        ("/v1/tokens/encode", {}),
        ("/v1/tokens/encode", {"text": 5}),
        ("/v1/tokens/decode", {"tokens": [-1]}),
        ("/v1/tokens/decode", {"tokens": ["a"]}),
        ("/v1/tokens/decode", {"tokens": [True]}),
        ("/v1/tokens/decode", {"tokens": [2**31 - 1]}),  # valid JSON, not in the vocabulary
    ):
        answer = await client.post(path, json=body)
        error = await answer.json()
        assert answer.status == 400 and error["message"], (path, body, error)
    idle = await make_client(load=False)
    nothing = await idle.post("/v1/tokens/encode", json={"text": "hi"})
    assert nothing.status == 400 and (await nothing.json())["error"]["code"] == "no_model_loaded"


async def test_any_key_may_tokenize(make_client) -> None:
    client = await make_client(http=KEYS)
    for path in ENCODE:
        assert (await client.post(path, json={"text": "hi"})).status == 401
        for headers in (USER, ADMIN):
            assert (await client.post(path, json={"text": "hi"}, headers=headers)).status == 200
