"""The official openai and ollama clients send images to a real daemon whose model
has a projector fabricated at test time next to it (full tier: libmtmd and SmolLM2)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import ollama
import openai
import pytest

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


def test_openai_client_image_url(seeing: DaemonProcess) -> None:
    with openai.OpenAI(base_url=seeing.http_url + "/v1", api_key="unused", max_retries=0) as api:

        def ask(*images: bytes) -> openai.types.chat.ChatCompletion:
            parts: list = [{"type": "image_url", "image_url": {"url": data_url(i)}} for i in images]  # type: ignore[type-arg]
            parts.append({"type": "text", "text": "What is in the picture?"})
            return api.chat.completions.create(
                model=MODEL_ID,
                messages=[{"role": "user", "content": parts}],
                temperature=0,
                max_tokens=12,
            )

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
