"""Images on the llama.cpp backend through libmtmd, with a projector fabricated at
test time (tests/fixtures/mmproj.py) paired with the real SmolLM2. Its answers are
nonsense; the tests assert mechanics: the image tokens counted, the pixels reaching
the model (different images, different greedy answers; the same image, the same
answer), the errors, a quiet stderr and no reuse of image cells as text."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.backends.base import GenerateResult
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.errors import ContextLengthExceeded, InvalidImage, LoadFailed
from rkllmd.requests import (
    BackendDefaults,
    ChatMessage,
    GenerateRequest,
    ImageInput,
    LoadOptions,
    Sampling,
)

from tests.fixtures.mmproj import IMAGE_TOKENS, write_mmproj
from tests.fixtures.pictures import BLUE, RED, jpeg, png
from tests.helpers import model_source

pytestmark = pytest.mark.real_model


def seeing_model(folder: Path, n_embd_text: int = 576) -> Path:
    model = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    os.link(model_source(), model)
    write_mmproj(folder / "SmolLM2-mmproj-f32.gguf", n_embd_text)
    return model


@pytest.fixture(scope="module")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    model = seeing_model(tmp_path_factory.mktemp("seeing"))
    backend = LlamaCppBackend(BackendDefaults(ctx_size=1024, threads=1, parallel=2))
    props = backend.load(model, LoadOptions())
    assert props.vision and props.details["projector"] == "SmolLM2-mmproj-f32.gguf"
    yield backend
    backend.close()


def image(data: bytes, mime: str = "image/png") -> ImageInput:
    return ImageInput(data, mime, 1, 1)  # the size is the edge's business


def ask(
    backend: LlamaCppBackend, *images: ImageInput, text: str = "What is in the picture?"
) -> tuple[str, GenerateResult]:
    pieces: list[str] = []
    request = GenerateRequest(
        messages=(ChatMessage("user", text, images=images),),
        sampling=Sampling(temperature=0.0, max_tokens=12),
    )
    result = backend.generate(
        request, lambda t, index=0, logprobs=None: pieces.append(t), threading.Event()
    )
    return "".join(pieces), result


def test_each_image_adds_its_tokens_to_the_prompt(backend: LlamaCppBackend) -> None:
    _, plain = ask(backend)
    _, one = ask(backend, image(RED))
    _, two = ask(backend, image(RED), image(BLUE))
    # One image: its tokens and the line break after the markers; each more: its tokens.
    assert one.usage.prompt_tokens > plain.usage.prompt_tokens + IMAGE_TOKENS - 1
    assert two.usage.prompt_tokens - one.usage.prompt_tokens == IMAGE_TOKENS
    assert one.perf is not None and set(one.perf) >= {"image_encode_ms", "image_prefill_ms"}


def test_the_model_sees_the_pixels(backend: LlamaCppBackend) -> None:
    red, _ = ask(backend, image(RED))
    blue, _ = ask(backend, image(BLUE))
    assert red and blue and red != blue
    assert ask(backend, image(RED))[0] == red
    # A JPEG decodes too (libmtmd's own decoder, in the worker).
    green, result = ask(backend, image(jpeg(), "image/jpeg"))
    assert green and result.usage.completion_tokens > 0


def test_image_cells_are_never_reused_as_text(backend: LlamaCppBackend) -> None:
    fresh, _ = ask(backend, text="Name a colour.")
    ask(backend, image(RED), text="Name a colour.")
    again, result = ask(backend, text="Name a colour.")
    assert again == fresh
    # Only the text before the image could have matched.
    assert result.usage.cached_tokens < result.usage.prompt_tokens


def test_undecodable_bytes_are_an_invalid_image(backend: LlamaCppBackend) -> None:
    truncated = RED[:40]  # a PNG header the edge accepts, no pixel data
    with pytest.raises(InvalidImage):
        ask(backend, image(truncated))
    assert ask(backend, image(RED))[0]  # the model still serves


def test_a_typed_marker_does_not_stand_for_an_image(backend: LlamaCppBackend) -> None:
    text, result = ask(backend, image(RED), text="<__media__> what is <__media__> this?")
    assert text and result.usage.completion_tokens > 0


def test_images_count_against_the_context(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=256, threads=1, parallel=1))
    try:
        n_ctx = backend.load(seeing_model(tmp_path), LoadOptions()).n_ctx
        assert ask(backend, image(RED))[0]
        too_many = n_ctx // IMAGE_TOKENS + 1
        with pytest.raises(ContextLengthExceeded) as refused:
            ask(backend, *(image(png(rgb=(i, 0, 0))) for i in range(too_many)))
        assert refused.value.details["prompt_tokens"] > n_ctx
    finally:
        backend.close()


def test_a_projector_of_another_size_fails_the_load(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=256, threads=1, parallel=1))
    with pytest.raises(LoadFailed, match="does not fit"):
        backend.load(seeing_model(tmp_path, n_embd_text=512), LoadOptions())
    backend.close()


def test_libmtmd_is_quiet(backend: LlamaCppBackend, capfd: pytest.CaptureFixture[str]) -> None:
    ask(backend, image(BLUE))
    err = capfd.readouterr().err
    assert "encoded" not in err and "add_text" not in err and "image" not in err.lower()
