"""Vision on the NPU, in-process: the RKLLM backend with its .rknn encoder on the
librknnrt double and the librkllmrt double.

The librknnrt double logs a digest of the pixels it was given and of the embeddings
it computed from them; the librkllmrt double logs a digest of each image's
embeddings it received in RKLLM_INPUT_MULTIMODAL. Equal digests along the chain
prove an image travelled from the request to the LLM runtime.
"""

from __future__ import annotations

import ctypes
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from PIL import Image
from rkllmd.backends.rkllm import rknn
from rkllmd.backends.rkllm.backend import RkllmBackend
from rkllmd.errors import ContextLengthExceeded, GenerationFailed, InvalidImage, ModelHasNoVision
from rkllmd.images import ImageInput, identify
from rkllmd.props import ModelProps
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

from tests.backends.conftest import CallLog
from tests.fixtures.build_double import double_library, rknn_library, write_encoder, write_model

VL_MODEL = "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rkllm"
QWEN_MARKERS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]


def fnv1a(data: bytes) -> str:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def png(width: int, height: int, colour: tuple[int, int, int]) -> ImageInput:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    data = buf.getvalue()
    mime, w, h = identify(data)
    return ImageInput(data, mime, w, h)


def ask(text: str, *images: ImageInput, max_tokens: int = 64) -> GenerateRequest:
    return GenerateRequest(
        messages=(ChatMessage("user", text, images=tuple(images)),),
        sampling=Sampling(max_tokens=max_tokens, temperature=0.0),
    )


Loader = Callable[..., tuple[RkllmBackend, ModelProps]]


@pytest.fixture
def load(npu_models: Path, call_log: CallLog, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loader]:
    """Load a model from ``npu_models`` on the doubles; closed at the end."""
    monkeypatch.setenv("RKLLM_DOUBLE_LOG", str(call_log.path))
    opened: list[RkllmBackend] = []

    def start(
        name: str = VL_MODEL, abi: int = 13, version: str = "1.3.0", **options: object
    ) -> tuple[RkllmBackend, ModelProps]:
        path = npu_models / name
        if not path.exists():
            write_model(npu_models, name)
        defaults = BackendDefaults(
            library=str(double_library(abi, version, True)),
            rknn_library=str(options.pop("rknn_library", rknn_library())),
            ctx_size=options.pop("ctx_size", None),  # type: ignore[arg-type]
        )
        backend = RkllmBackend(defaults)
        opened.append(backend)
        return backend, backend.load(path, LoadOptions())

    yield start
    for backend in opened:
        backend.close()


def generate(backend: RkllmBackend, request: GenerateRequest) -> tuple[str, int]:
    out: list[str] = []
    result = backend.generate(request, lambda text, *_: out.append(text), threading.Event())
    return "".join(out), result.usage.prompt_tokens


def test_the_pixels_reach_the_encoder_and_its_embeddings_reach_the_llm(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", tokens=16, dim=64)
    backend, props = load()
    assert props.vision is True
    assert props.details["vision"]["image_tokens"] == 16  # type: ignore[index]
    red = png(448, 448, (255, 0, 0))
    reply, _ = generate(backend, ask("What is this?", red))
    assert reply.startswith("Reply ")
    (pixels,) = call_log.calls("rknn_inputs_set")
    # Exactly the encoder's size: no padding, no resampling; the bytes are known.
    assert pixels["ok"] == 1 and pixels["size"] == 448 * 448 * 3
    assert pixels["pixels_digest"] == fnv1a(bytes((255, 0, 0)) * (448 * 448))
    (encoded,) = [c for c in call_log.calls("rknn_run") if c["rc"] == 0]
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert multimodal["ok"] == 1
    assert multimodal["digests"] == [encoded["embeddings_digest"]]
    assert multimodal["n_image"] == 1 and multimodal["n_image_tokens"] == 16
    assert [multimodal["image_width"], multimodal["image_height"]] == [448, 448]
    assert [
        multimodal["image_start"],
        multimodal["image_end"],
        multimodal["image_content"],
    ] == QWEN_MARKERS
    assert "<image>What is this?" in multimodal["prompt"]


def test_a_wide_image_is_padded_with_grey_and_centred(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=64, width=64)
    backend, _ = load()
    generate(backend, ask("wide", png(200, 100, (0, 0, 255))))
    (pixels,) = call_log.calls("rknn_inputs_set")
    assert pixels["size"] == 64 * 64 * 3
    assert pixels["corner"] == [128, 128, 128]  # the padding above the picture
    assert pixels["centre"] == [0, 0, 255]


def test_images_change_the_reply_and_the_same_image_gives_the_same_one(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=32, width=32)
    backend, _ = load()
    red, green = png(40, 30, (255, 0, 0)), png(40, 30, (0, 255, 0))
    first, _ = generate(backend, ask("look", red))
    other, _ = generate(backend, ask("look", green))
    again, _ = generate(backend, ask("look", red))
    assert first == again and first != other
    digests = [c["digests"][0] for c in call_log.calls("rkllm_multimodal")]
    assert digests[0] == digests[2] != digests[1]


def test_several_images_one_tag_each_and_usage_counts_their_tokens(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=32, width=32)
    backend, _ = load()
    images = [png(20, 20, (i * 60, 0, 0)) for i in range(3)]
    _, with_images = generate(backend, ask("count", *images))
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert multimodal["n_image"] == 3 and multimodal["tags"] == 3
    assert len(set(multimodal["digests"])) == 3
    # The double counts a token per 4 bytes of text, plus the image tokens.
    text_tokens = (len(multimodal["prompt"].encode()) + 3) // 4
    assert with_images == text_tokens + 3 * 16


def test_multiple_encoder_outputs_are_interleaved_per_token(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    # Qwen3-VL's encoder has several outputs; RKLLM wants them side by side per token.
    name = "Qwen3-VL-2B-Instruct_W8A8_RK3588.rkllm"
    write_model(npu_models, name, image_embd_size=2 * 8)
    write_encoder(npu_models, "Qwen3-VL-2B-Instruct_W8A8_RK3588.rknn", tokens=4, dim=8, outputs=2)
    backend, props = load(name)
    assert props.details["vision"]["embedding_width"] == 16  # type: ignore[index]
    generate(backend, ask("deep", png(10, 10, (1, 2, 3))))
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert multimodal["ok"] == 1 and multimodal["n_image_tokens"] == 4


def test_a_model_without_an_encoder_has_no_vision(load: Loader, call_log: CallLog) -> None:
    backend, props = load("Qwen2.5-0.5B-Instruct_W8A8_RK3588.rkllm")
    assert props.vision is False and props.details["vision"] is None
    with pytest.raises(ModelHasNoVision):
        generate(backend, ask("see?", png(8, 8, (0, 0, 0))))
    assert call_log.calls("rknn_init") == [] and call_log.runs() == []


def test_the_encoder_is_loaded_once_and_released_with_the_model(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=16, width=16)
    backend, _ = load()
    for colour in ((1, 1, 1), (2, 2, 2)):
        generate(backend, ask("again", png(16, 16, colour)))
    assert len(call_log.calls("rknn_init")) == 1 and call_log.calls("rknn_destroy") == []
    backend.close()
    (destroyed,) = call_log.calls("rknn_destroy")
    assert destroyed["unreleased_outputs"] == 0
    assert len(call_log.calls("rkllm_destroy")) == 1


def test_an_undecodable_image_is_invalid_and_the_model_still_serves(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=16, width=16)
    backend, _ = load()
    good = png(16, 16, (9, 9, 9))
    # A PNG header (so the intake let it through) with its pixel data cut off.
    broken = ImageInput(good.data[:40], good.mime_type, good.width, good.height)
    with pytest.raises(InvalidImage):
        generate(backend, ask("broken", broken))
    assert call_log.runs() == []
    reply, _ = generate(backend, ask("fine", good))
    assert reply.startswith("Reply ")


def test_images_that_cannot_fit_the_context_are_refused_before_the_run(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(
        npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=64, width=64, tokens=40
    )
    backend, props = load(ctx_size=64)
    assert props.n_ctx == 64
    with pytest.raises(ContextLengthExceeded) as caught:
        generate(backend, ask("two", png(8, 8, (0, 0, 0)), png(8, 8, (1, 1, 1))))
    assert caught.value.details["prompt_tokens"] >= 80
    assert call_log.runs() == [] and call_log.calls("rknn_run") == []
    reply, _ = generate(backend, ask("one", png(8, 8, (0, 0, 0))))
    assert reply.startswith("Reply ")


def test_a_client_image_tag_in_the_text_is_refused(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=16, width=16)
    backend, _ = load()
    with pytest.raises(InvalidImage):
        generate(backend, ask("two tags <image>", png(8, 8, (0, 0, 0))))
    assert call_log.runs() == []


def test_runtime_1_2_takes_the_markers_at_init(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    name = "internvl3-1b_w8a8_rk3588.rkllm"
    write_model(npu_models, name)
    write_encoder(npu_models, "internvl3-1b_vision_rk3588.rknn", height=16, width=16)
    backend, props = load(name, abi=12, version="1.2.3")
    assert props.vision is True
    generate(backend, ask("what", png(8, 8, (5, 5, 5))))
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert multimodal["ok"] == 1
    assert [multimodal["image_start"], multimodal["image_end"], multimodal["image_content"]] == [
        "<img>",
        "</img>",
        "<IMG_CONTEXT>",
    ]


def test_the_sidecar_names_the_encoder_and_overrides_the_markers(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    name = "my-custom-model.rkllm"
    write_model(npu_models, name)
    write_encoder(npu_models, "encoder-a.rknn", height=16, width=16)
    write_encoder(npu_models, "encoder-b.rknn", height=32, width=32)
    sidecar = {"projector": "encoder-b.rknn", "vision": {"family": "minicpm-v", "image_end": "[/]"}}
    (npu_models / "my-custom-model.rkllmd.json").write_text(json.dumps(sidecar))
    backend, props = load(name)
    assert props.details["vision"]["encoder"] == "encoder-b.rknn"  # type: ignore[index]
    generate(backend, ask("custom", png(8, 8, (7, 7, 7))))
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert [multimodal["image_start"], multimodal["image_end"], multimodal["image_content"]] == [
        "<image>",
        "[/]",
        "<unk>",
    ]
    assert multimodal["image_width"] == 32


def test_an_encoder_of_an_unknown_family_is_not_used_and_the_notes_say_why(
    load: Loader, npu_models: Path, call_log: CallLog
) -> None:
    name = "my-custom-model.rkllm"
    write_model(npu_models, name)
    write_encoder(npu_models, "my-custom-model.rknn")
    _, props = load(name)
    assert props.vision is False
    assert any("family is unknown" in note for note in props.notes)
    assert call_log.calls("rknn_init") == []


def test_without_librknnrt_the_model_loads_text_only(
    load: Loader, npu_models: Path, tmp_path: Path
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn")
    backend, props = load(rknn_library=tmp_path / "missing" / "librknnrt.so")
    assert props.vision is False
    assert any("librknnrt.so was not found" in note for note in props.notes)
    reply, _ = generate(backend, ask("[[say:text still works]]"))
    assert reply == "text still works"


def test_the_binding_lays_out_the_structs_as_the_c_compiler_does() -> None:
    lib = ctypes.CDLL(str(rknn_library()))
    lib.rknn_double_sizeof.restype = ctypes.c_int
    lib.rknn_double_sizeof.argtypes = [ctypes.c_char_p]
    for name, kind in rknn.STRUCTS.items():
        assert lib.rknn_double_sizeof(name.encode()) == ctypes.sizeof(kind), name
        assert ctypes.sizeof(kind) == rknn.EXPECTED_SIZES[name], name
    assert lib.rknn_double_sizeof(b"rknn_context") == ctypes.sizeof(rknn.Context)
    assert rknn.sizes_match() == []


def test_an_encoder_the_runtime_refuses_leaves_the_model_text_only(
    load: Loader, npu_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn")
    monkeypatch.setenv("RKNN_DOUBLE_FAIL", "init")
    backend, props = load()
    assert props.vision is False
    assert any("could not be loaded: rknn_init failed (-6)" in note for note in props.notes)
    assert generate(backend, ask("[[say:still here]]"))[0] == "still here"


def test_an_encoder_failing_mid_request_fails_that_request_only(
    load: Loader, npu_models: Path, call_log: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_encoder(npu_models, "Qwen2.5-VL-3B-Instruct_W8A8_RK3588.rknn", height=16, width=16)
    backend, _ = load()
    monkeypatch.setenv("RKNN_DOUBLE_FAIL", "run")
    with pytest.raises(GenerationFailed, match="vision encoder failed: rknn_run failed"):
        generate(backend, ask("fails", png(8, 8, (1, 1, 1))))
    assert call_log.runs() == []
    monkeypatch.delenv("RKNN_DOUBLE_FAIL")
    assert generate(backend, ask("works", png(8, 8, (1, 1, 1))))[0].startswith("Reply ")
