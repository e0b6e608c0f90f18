"""The official openai and ollama clients send images to a real daemon whose model
has a projector fabricated at test time next to it (full tier: libmtmd and SmolLM2)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.fixtures.imageserver import ImageServer, image_server
from tests.fixtures.mmproj import IMAGE_TOKENS, write_mmproj
from tests.fixtures.pictures import BLUE, RED, data_url
from tests.helpers import MODEL_ID, DaemonProcess, place_model, running_daemon, short_tempdir

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def seeing() -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    write_mmproj(models / "SmolLM2-mmproj-f32.gguf")
    with running_daemon(models, args=["--load", "smollm2"]) as started:
        yield started
    shutil.rmtree(models.parent, ignore_errors=True)


def _ask_about(api: openai.OpenAI, *urls: str) -> openai.types.chat.ChatCompletion:
    """One greedy question about the images at ``urls`` (data: or http URLs)."""
    parts: list = [{"type": "image_url", "image_url": {"url": u}} for u in urls]  # type: ignore[type-arg]
    parts.append({"type": "text", "text": "What is in the picture?"})
    return api.chat.completions.create(
        model=MODEL_ID,
        messages=[{"role": "user", "content": parts}],
        temperature=0,
        max_tokens=12,
    )


def test_openai_client_image_url(seeing: DaemonProcess) -> None:
    with openai.OpenAI(base_url=seeing.http_url + "/v1", api_key="unused", max_retries=0) as api:

        def ask(*images: bytes) -> openai.types.chat.ChatCompletion:
            return _ask_about(api, *(data_url(i) for i in images))

        one, two, blue = ask(RED), ask(RED, BLUE), ask(BLUE)
        assert one.usage and two.usage
        assert two.usage.prompt_tokens - one.usage.prompt_tokens == IMAGE_TOKENS
        assert one.choices[0].message.content != blue.choices[0].message.content
        with pytest.raises(openai.BadRequestError) as refused:
            api.chat.completions.create(
                model=MODEL_ID,
                messages=[
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://127.0.0.1/a.png"}}
                        ],
                    }
                ],
            )
        assert refused.value.code == "invalid_image"


@pytest.fixture(scope="module")
def fetching() -> Iterator[tuple[DaemonProcess, ImageServer]]:
    """A daemon that may fetch images from a local image server (vision.fetch_urls)."""
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    write_mmproj(models / "SmolLM2-mmproj-f32.gguf")
    config = models.parent / "rkllmd.toml"
    with image_server() as server:
        allowed = f'fetch_urls = ["127.0.0.1:{server.port}"]'
        config.write_text(f"[vision]\n{allowed}\nmax_image_bytes = 65536\n")
        with running_daemon(
            models, args=["--load", "smollm2"], env={"RKLLMD_CONFIG": str(config)}
        ) as started:
            yield started, server
    shutil.rmtree(models.parent, ignore_errors=True)


def test_openai_client_image_url_fetched_from_an_allowed_host(fetching) -> None:  # type: ignore[no-untyped-def]
    daemon, server = fetching
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="unused", max_retries=0) as api:

        def ask(*urls: str) -> openai.types.chat.ChatCompletion:
            return _ask_about(api, *urls)

        fetched, inline = ask(server.url("/red.png")), ask(data_url(RED))
        two = ask(server.url("/red.png"), server.url("/hop"))  # a same-host redirect
        assert fetched.usage and inline.usage and two.usage
        assert fetched.choices[0].message.content == inline.choices[0].message.content
        assert fetched.usage.prompt_tokens == inline.usage.prompt_tokens
        assert two.usage.prompt_tokens - fetched.usage.prompt_tokens == IMAGE_TOKENS
        assert server.hits == ["/red.png", "/red.png", "/hop", "/red.png"]
        for url, reason in (
            (server.url("/red.png", host="localhost"), "host_not_allowed"),
            (server.url("/away"), "redirect_to_another_host"),
            (server.url("/missing"), "upstream_status"),
            (server.url("/big-chunked"), None),
        ):
            with pytest.raises(openai.BadRequestError) as refused:
                ask(url)
            assert refused.value.code == "invalid_image"
            details = refused.value.body["details"]  # type: ignore[index]
            assert details.get("reason") == (reason or "too_large")
        with pytest.raises(openai.InternalServerError) as failed:
            ask(server.url("/broken"))
        assert failed.value.status_code == 502 and failed.value.code == "image_fetch_failed"
        with pytest.raises(openai.BadRequestError) as refused:
            ask("file:///etc/passwd")
        assert refused.value.body["details"]["url_scheme"] == "file"  # type: ignore[index]
        responses = api.responses.create(
            model=MODEL_ID,
            input=[
                {
                    "role": "user",
                    "content": [
                        {"type": "input_image", "image_url": server.url("/red.png")},
                        {"type": "input_text", "text": "What is in the picture?"},
                    ],
                }
            ],
            temperature=0,
            max_output_tokens=12,
        )
        assert responses.output_text == inline.choices[0].message.content


def test_ollama_client_images(seeing: DaemonProcess) -> None:
    client = ollama.Client(host=seeing.http_url)
    try:
        options = {"temperature": 0, "num_predict": 12}
        red = client.chat(
            model=MODEL_ID,
            messages=[{"role": "user", "content": "What is it?", "images": [RED]}],
            options=options,
        )
        blue = client.generate(model=MODEL_ID, prompt="What is it?", images=[BLUE], options=options)
        assert red.message.content and blue.response
        assert (red.prompt_eval_count or 0) > IMAGE_TOKENS
    finally:
        client._client.close()
