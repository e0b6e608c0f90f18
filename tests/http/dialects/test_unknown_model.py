"""http.unknown_model both ways, on every OpenAI route that takes a model name."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.helpers import MODEL_ID
from tests.http.conftest import sse_events

HEADER = "X-Rkllmd-Model-Not-Found"
MESSAGES = [{"role": "user", "content": "Hi"}]
ROUTES = [
    ("/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3}),
    ("/v1/completions", {"prompt": "Once", "max_tokens": 3}),
    ("/v1/embeddings", {"input": "some text"}),
]


@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_resident_answers_a_name_that_resolves_to_nothing(
    make_client, path: str, body: dict[str, Any]
) -> None:
    client = await make_client()
    response = await client.post(path, json={"model": "test", **body})
    assert response.status == 200
    assert response.headers[HEADER] == "test"
    assert (await response.json())["model"] == MODEL_ID
    # A name that resolves answers without the header.
    named = await client.post(path, json={"model": "smollm2", **body})
    assert named.status == 200 and HEADER not in named.headers


async def test_streams_carry_the_header_and_odd_names_are_quoted(make_client) -> None:
    client = await make_client()
    body = {"model": "tést\u2028x y", "messages": MESSAGES, "max_tokens": 3, "stream": True}
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 200
    assert response.headers[HEADER] == "t%C3%A9st%E2%80%A8x y"
    events = sse_events(await response.text())
    assert events[0]["model"] == MODEL_ID and events[-1] == "[DONE]"


@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_nothing_resident_is_still_404(make_client, path: str, body: dict[str, Any]) -> None:
    client = await make_client(load=False)
    response = await client.post(path, json={"model": "test", **body})
    error = (await response.json())["error"]
    assert response.status == 404 and error["code"] == "model_not_found"
    assert error["details"]["available"] == [MODEL_ID] and HEADER not in response.headers


@pytest.mark.parametrize(("path", "body"), ROUTES)
async def test_error_mode_is_404(make_client, path: str, body: dict[str, Any]) -> None:
    client = await make_client(http={"unknown_model": "error"})
    response = await client.post(path, json={"model": "test", **body})
    assert response.status == 404 and HEADER not in response.headers
    assert (await response.json())["error"]["code"] == "model_not_found"


async def test_invalid_names_are_never_replaced(make_client) -> None:
    client = await make_client()
    for model, status, code in (("../etc", 400, "invalid_model_name"), ("", 400, None)):
        response = await client.post(
            "/v1/chat/completions", json={"model": model, "messages": MESSAGES}
        )
        assert response.status == status and HEADER not in response.headers
        if code:
            assert (await response.json())["error"]["code"] == code


async def test_the_openai_client_sees_404_in_error_mode(make_client) -> None:
    client = await make_client(http={"unknown_model": "error"})
    base = str(client.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as api:
        with pytest.raises(openai.NotFoundError) as missing:
            await api.chat.completions.create(model="no-such-model", messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.code == "model_not_found" and MODEL_ID in str(missing.value)
