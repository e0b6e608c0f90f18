"""Image URLs fetched where the owner allows (``vision.fetch_urls``): a real image
server on 127.0.0.1, the daemon's HTTP app with that host listed, and a model that
sees (the fabricated projector; fake backend in the fast tier, libmtmd in the full
one). The server's hit log shows what the daemon did and did not fetch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fixtures.imageserver import ImageServer, image_server
from tests.fixtures.mmproj import IMAGE_TOKENS, write_mmproj
from tests.fixtures.pictures import BLUE, RED, data_url
from tests.helpers import MODEL_ID, free_port
from tests.http.conftest import sse_events
from tests.http.test_vision import openai_body

LIMIT = 64 * 1024  # max_image_bytes here; the oversize routes send a megabyte


@pytest.fixture
def server() -> Iterator[ImageServer]:
    with image_server() as started:
        yield started


@pytest.fixture
async def fetching(make_client, smol_dir: Path, server: ImageServer) -> Any:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    vision = {"fetch_urls": [f"127.0.0.1:{server.port}"], "max_image_bytes": LIMIT}
    return await make_client(vision=vision)


async def refusal(client: Any, *urls: str, status: int = 400) -> dict[str, Any]:
    response = await client.post("/v1/chat/completions", json=openai_body(*urls))
    error: dict[str, Any] = (await response.json())["error"]
    assert response.status == status, error
    return error


async def test_an_allowed_url_is_seen_like_the_same_image_sent_inline(fetching, server) -> None:  # type: ignore[no-untyped-def]
    base = str(fetching.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base, api_key="x", max_retries=0) as api:

        async def ask(*urls: str) -> tuple[str | None, int]:
            parts: list[Any] = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
            parts.append({"type": "text", "text": "What is in the picture?"})
            answer = await api.chat.completions.create(
                model=MODEL_ID,
                messages=[{"role": "user", "content": parts}],
                temperature=0,
                max_tokens=12,
            )
            assert answer.usage
            return answer.choices[0].message.content, answer.usage.prompt_tokens

        fetched, one = await ask(server.url("/red.png"))
        inline, inline_tokens = await ask(data_url(RED))
        blue, _ = await ask(server.url("/blue.png"))
        _, two = await ask(server.url("/red.png"), server.url("/photo.jpg"))
    assert server.hits.count("/red.png") == 2 and "/photo.jpg" in server.hits
    assert fetched == inline and one == inline_tokens
    assert two - one == IMAGE_TOKENS
    assert blue != fetched


async def test_responses_input_image_url(fetching, server) -> None:  # type: ignore[no-untyped-def]
    async def ask(url: str) -> dict[str, Any]:
        parts = [{"type": "input_image", "image_url": url}, {"type": "input_text", "text": "?"}]
        body = {
            "model": MODEL_ID,
            "input": [{"type": "message", "role": "user", "content": parts}],
            "temperature": 0,
            "max_output_tokens": 8,
        }
        response = await fetching.post("/v1/responses", json=body)
        assert response.status == 200, await response.text()
        return await response.json()  # type: ignore[no-any-return]

    fetched, inline = await ask(server.url("/blue.png")), await ask(data_url(BLUE))
    assert said(fetched) == said(inline)
    assert fetched["usage"]["input_tokens"] == inline["usage"]["input_tokens"]
    assert server.hits == ["/blue.png"]


def said(response: dict[str, Any]) -> str:
    return "".join(
        part["text"]
        for item in response["output"]
        if item["type"] == "message"
        for part in item["content"]
    )


async def test_urls_are_refused_by_default(make_client, smol_dir: Path, server) -> None:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    client = await make_client()
    error = await refusal(client, server.url("/red.png"))
    assert error["code"] == "invalid_image" and error["details"]["url_scheme"] == "http"
    assert "not fetched" in error["message"]
    assert server.hits == []


async def test_a_host_not_on_the_list_is_not_contacted(fetching, server) -> None:  # type: ignore[no-untyped-def]
    for url in (server.url("/red.png", host="localhost"), f"http://127.0.0.1:{free_port()}/a.png"):
        error = await refusal(fetching, url)
        assert error["code"] == "invalid_image"
        assert error["details"]["reason"] == "host_not_allowed"
    assert server.hits == []


async def test_file_and_other_schemes_stay_refused(fetching, server) -> None:  # type: ignore[no-untyped-def]
    for url, scheme in (("file:///etc/passwd", "file"), ("ftp://127.0.0.1/a.png", "ftp")):
        error = await refusal(fetching, url)
        assert error["code"] == "invalid_image" and error["details"]["url_scheme"] == scheme
        assert "/etc" not in error["message"]
    assert server.hits == []


async def test_redirects_stay_on_the_same_host(fetching, server) -> None:  # type: ignore[no-untyped-def]
    response = await fetching.post("/v1/chat/completions", json=openai_body(server.url("/hop")))
    assert response.status == 200, await response.text()
    assert server.hits == ["/hop", "/red.png"]
    response = await fetching.post(
        "/v1/chat/completions", json=openai_body(server.url("/hop-absolute"))
    )
    assert response.status == 200 and server.hits[2:] == ["/hop-absolute", "/hop", "/red.png"]
    server.hits.clear()
    error = await refusal(fetching, server.url("/away"))
    assert error["details"]["reason"] == "redirect_to_another_host"
    assert error["details"]["redirect_host"] == "localhost"
    assert server.hits == ["/away"]  # the other name was never asked
    error = await refusal(fetching, server.url("/loop"))
    assert error["details"]["reason"] == "too_many_redirects" and error["details"]["limit"] == 3
    assert server.hits.count("/loop") == 4  # the first request and three redirects


async def test_a_redirect_leaving_an_allowed_prefix_is_refused(  # type: ignore[no-untyped-def]
    make_client, smol_dir: Path, server
) -> None:
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    client = await make_client(vision={"fetch_urls": [server.url("/hop")]})
    error = await refusal(client, server.url("/hop"))  # allowed, but it points at /red.png
    assert error["details"]["reason"] == "redirect_not_allowed"
    assert server.hits == ["/hop"]


@pytest.mark.parametrize("path", ["/big-declared", "/big-chunked", "/big-unsized"])
async def test_a_body_over_the_limit_is_abandoned(fetching, server, path: str) -> None:  # type: ignore[no-untyped-def]
    error = await refusal(fetching, server.url(path))
    assert error["code"] == "invalid_image"
    assert error["details"]["reason"] == "too_large" and error["details"]["limit"] == LIMIT


async def test_a_body_cut_short_is_a_failed_fetch(fetching, server) -> None:  # type: ignore[no-untyped-def]
    error = await refusal(fetching, server.url("/short"), status=502)
    assert error["code"] == "image_fetch_failed" and "cut short" in error["message"]


@pytest.mark.parametrize("path", ["/page", "/empty"])
async def test_what_is_not_an_image_is_invalid_image(fetching, server, path: str) -> None:  # type: ignore[no-untyped-def]
    error = await refusal(fetching, server.url(path))
    assert error["code"] == "invalid_image" and "reason" not in error.get("details", {})


async def test_upstream_failures_say_what_happened(fetching, server) -> None:  # type: ignore[no-untyped-def]
    error = await refusal(fetching, server.url("/missing"))
    assert error["code"] == "invalid_image"
    assert error["details"]["reason"] == "upstream_status"
    assert error["details"]["upstream_status"] == 404 and "404" in error["message"]
    error = await refusal(fetching, server.url("/broken"), status=502)
    assert error["code"] == "image_fetch_failed" and error["details"]["upstream_status"] == 500
    assert error["type"] == "server_error"


async def test_an_unreachable_allowed_host_is_a_bad_gateway(make_client, smol_dir: Path) -> None:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    port = free_port()  # nothing listens there
    client = await make_client(vision={"fetch_urls": [f"127.0.0.1:{port}"]})
    error = await refusal(client, f"http://127.0.0.1:{port}/a.png", status=502)
    assert error["code"] == "image_fetch_failed" and "could not connect" in error["message"]


async def test_a_stalled_server_times_out(make_client, smol_dir: Path, server) -> None:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    vision = {"fetch_urls": [f"127.0.0.1:{server.port}"], "fetch_timeout_seconds": 0.5}
    client = await make_client(vision=vision)
    error = await refusal(client, server.url("/stall"), status=504)
    assert error["code"] == "image_fetch_timeout" and error["details"]["timeout_seconds"] == 0.5


async def test_the_count_limit_comes_before_any_fetch(fetching, server) -> None:  # type: ignore[no-untyped-def]
    error = await refusal(fetching, *[server.url("/red.png")] * 9)
    assert error["details"]["limit"] == 8 and server.hits == []


async def test_proxies_from_the_environment_are_not_used(  # type: ignore[no-untyped-def]
    fetching, server, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    response = await fetching.post("/v1/chat/completions", json=openai_body(server.url("/red.png")))
    assert response.status == 200, await response.text()


async def test_the_list_is_read_per_request(fetching, server) -> None:  # type: ignore[no-untyped-def]
    from rkllmd.http.services import SERVICES

    live = fetching.server.app[SERVICES].config
    url = server.url("/red.png")
    assert (await fetching.post("/v1/chat/completions", json=openai_body(url))).status == 200
    live.replace(live.current.model_copy(update={"vision": type(live.current.vision)()}))
    error = await refusal(fetching, url)
    assert error["details"]["url_scheme"] == "http" and server.hits == ["/red.png"]


async def test_a_stream_starts_only_after_the_fetch(fetching, server) -> None:  # type: ignore[no-untyped-def]
    whole = await fetching.post("/v1/chat/completions", json=openai_body(server.url("/red.png")))
    expected = (await whole.json())["choices"][0]["message"]["content"]
    streamed = await fetching.post(
        "/v1/chat/completions", json=openai_body(server.url("/red.png"), stream=True)
    )
    assert streamed.status == 200
    text = "".join(
        choice["delta"].get("content") or ""
        for event in sse_events(await streamed.text())
        if event != "[DONE]"
        for choice in event["choices"]
    )
    assert text == expected
    # A failed fetch is a plain JSON error, not a stream that breaks off.
    failed = await fetching.post(
        "/v1/chat/completions", json=openai_body(server.url("/missing"), stream=True)
    )
    assert failed.status == 400 and failed.content_type == "application/json"
    assert (await failed.json())["error"]["code"] == "invalid_image"


async def test_surfaces_that_take_bytes_never_fetch(fetching, server) -> None:  # type: ignore[no-untyped-def]
    url = server.url("/red.png")
    message = {"role": "user", "content": "What is it?", "images": [url]}
    response = await fetching.post(
        "/api/chat", json={"model": MODEL_ID, "messages": [message], "stream": False}
    )
    refused = await response.json()
    assert response.status == 400 and refused["code"] == "invalid_image"
    assert "fetched only for OpenAI image_url" in refused["error"]
    body = {"messages": [{"role": "user", "content": "?", "images": [{"data_base64": url}]}]}
    response = await fetching.post("/chat", json=body)
    refused = await response.json()
    assert response.status == 400 and refused["code"] == "invalid_image"
    assert "fetched only for OpenAI image_url" in refused["detail"]
    assert server.hits == []
