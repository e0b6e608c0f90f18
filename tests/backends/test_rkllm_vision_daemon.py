"""Vision on the NPU through a real daemon: images sent by clients reach the LLM runtime.

A daemon serves an .rkllm vision model (a ``.rknn`` encoder beside it) on the
librkllmrt and librknnrt doubles. The librknnrt double logs a digest of the pixels
it was given and of the embeddings it made; the librkllmrt double logs a digest of
each image's embeddings in the RKLLM_INPUT_MULTIMODAL it received. The chain of equal
digests proves an image travelled from the client, through the daemon and the worker
pipe, to the encoder and on to the LLM.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import requests
from PIL import Image

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon
from tests.fixtures.build_double import rknn_library, write_encoder, write_model
from tests.helpers import DaemonProcess, wait_for

VL_ID = "Qwen2.5-VL-3B-Instruct_W8A8_RK3588"
RKLLMCTL = Path(sys.executable).with_name("rkllmctl")
TOKENS = 16


def fnv1a(data: bytes) -> str:
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{h:08x}"


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture
def vision_daemon(npu_daemon: NpuDaemon, npu_models: Path) -> DaemonProcess:
    """The VL model loaded, with its encoder (input 448x448, 16 tokens per image)."""
    write_model(npu_models, f"{VL_ID}.rkllm")
    write_encoder(npu_models, f"{VL_ID}.rknn", height=448, width=448, tokens=TOKENS)
    env = {"RKLLMD_RKLLM__RKNN_LIBRARY": str(rknn_library())}
    return npu_daemon(load=False, env=env, args=["--load", VL_ID])


def client(daemon: DaemonProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0)


def ask(daemon: DaemonProcess, image: bytes, text: str = "What is this?", model: str = VL_ID):  # type: ignore[no-untyped-def]
    content = [
        {"type": "text", "text": text},
        {"type": "image_url", "image_url": {"url": data_url(image)}},
    ]
    with client(daemon) as c:
        return c.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
            temperature=0,
            max_tokens=32,
        )


def test_an_image_travels_from_the_openai_client_to_the_llm(
    vision_daemon: DaemonProcess, call_log: CallLog
) -> None:
    red = png(448, 448, (255, 0, 0))
    answer = ask(vision_daemon, red)
    assert (answer.choices[0].message.content or "").startswith("Reply ")
    (pixels,) = call_log.calls("rknn_inputs_set")
    # The encoder's own size: no padding or resampling, so the bytes are known exactly.
    assert pixels["pixels_digest"] == fnv1a(bytes((255, 0, 0)) * (448 * 448))
    (encoded,) = call_log.calls("rknn_run")
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert multimodal["digests"] == [encoded["embeddings_digest"]]
    assert multimodal["n_image_tokens"] == TOKENS and multimodal["n_image"] == 1
    assert multimodal["image_content"] == "<|image_pad|>"
    # The double counts a token per 4 bytes of prompt text, plus the image tokens.
    text_tokens = (len(multimodal["prompt"].encode()) + 3) // 4
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == text_tokens + TOKENS


def test_different_images_differ_and_the_same_image_repeats(
    vision_daemon: DaemonProcess, call_log: CallLog
) -> None:
    red, blue = png(64, 48, (255, 0, 0)), png(64, 48, (0, 0, 255))
    first = ask(vision_daemon, red).choices[0].message.content
    other = ask(vision_daemon, blue).choices[0].message.content
    again = ask(vision_daemon, red).choices[0].message.content
    assert first == again != other
    digests = [c["digests"][0] for c in call_log.calls("rkllm_multimodal")]
    assert digests[0] == digests[2] != digests[1]


def test_the_simple_chat_vision_route_sends_the_image(
    vision_daemon: DaemonProcess, call_log: CallLog
) -> None:
    image = png(30, 60, (0, 200, 0))
    body = {
        "model": VL_ID,
        "messages": [
            {
                "role": "user",
                "content": "Describe it.",
                "images": [
                    {"data_base64": base64.b64encode(image).decode(), "mime_type": "image/png"}
                ],
            }
        ],
    }
    reply = requests.post(vision_daemon.http_url + "/chat/vision", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    (pixels,) = call_log.calls("rknn_inputs_set")
    assert pixels["corner"] == [128, 128, 128] and pixels["centre"] == [0, 200, 0]
    (multimodal,) = call_log.calls("rkllm_multimodal")
    assert "<image>Describe it." in multimodal["prompt"]


def test_a_model_without_an_encoder_refuses_images(
    npu_daemon: NpuDaemon, call_log: CallLog
) -> None:
    daemon = npu_daemon()
    with pytest.raises(openai.BadRequestError) as caught:
        ask(daemon, png(8, 8, (1, 2, 3)), model=MODEL_ID)
    assert caught.value.status_code == 400
    assert "model_has_no_vision" in str(caught.value.body)
    assert call_log.calls("rknn_init") == [] and call_log.runs() == []


def test_an_undecodable_image_is_invalid_and_the_daemon_serves_on(
    vision_daemon: DaemonProcess, call_log: CallLog
) -> None:
    # A PNG whose header passes the intake but whose pixel data is cut off: only the
    # worker, decoding it, finds out.
    broken = png(32, 32, (5, 5, 5))[:60]
    with pytest.raises(openai.BadRequestError) as caught:
        ask(vision_daemon, broken)
    assert "invalid_image" in str(caught.value.body)
    assert call_log.runs() == []
    assert (ask(vision_daemon, png(8, 8, (5, 5, 5))).choices[0].message.content or "").startswith(
        "Reply "
    )


def test_images_beyond_the_context_are_refused_before_generation(
    npu_daemon: NpuDaemon, npu_models: Path, call_log: CallLog
) -> None:
    write_model(npu_models, f"{VL_ID}.rkllm", max_context_limit=64)
    write_encoder(npu_models, f"{VL_ID}.rknn", height=64, width=64, tokens=40)
    env = {"RKLLMD_RKLLM__RKNN_LIBRARY": str(rknn_library())}
    daemon = npu_daemon(load=False, env=env, args=["--load", VL_ID])
    content = [
        {"type": "text", "text": "two"},
        *(
            {"type": "image_url", "image_url": {"url": data_url(png(8, 8, (i, i, i)))}}
            for i in (1, 2)
        ),
    ]
    with client(daemon) as c, pytest.raises(openai.BadRequestError) as caught:
        c.chat.completions.create(
            model=VL_ID,
            messages=[{"role": "user", "content": content}],  # type: ignore[list-item]
        )
    assert "context_length_exceeded" in str(caught.value.body)
    assert call_log.runs() == [] and call_log.calls("rknn_run") == []


def test_the_encoder_is_released_when_the_model_is_unloaded(
    vision_daemon: DaemonProcess, call_log: CallLog
) -> None:
    ask(vision_daemon, png(16, 16, (9, 9, 9)))
    assert len(call_log.calls("rknn_init")) == 1 and call_log.calls("rknn_destroy") == []
    vision_daemon.call("unload")
    (destroyed,) = wait_for(lambda: call_log.calls("rknn_destroy"), 60, "rknn_destroy")
    assert destroyed["unreleased_outputs"] == 0
    assert len(call_log.calls("rkllm_destroy")) == 1


def test_rpc_chat_image_parts_and_rkllmctl_run_image(
    vision_daemon: DaemonProcess, call_log: CallLog, tmp_path: Path
) -> None:
    image = png(100, 100, (10, 20, 30))
    part = {"type": "image", "data": base64.b64encode(image).decode(), "mime_type": "image/png"}
    messages = [{"role": "user", "content": [part, {"type": "text", "text": "See?"}]}]
    answer = vision_daemon.call("chat", model=VL_ID, messages=messages, temperature=0.0)
    assert answer["message"]["content"].startswith("Reply ")
    assert vision_daemon.call("show", model=VL_ID)["props"]["vision"] is True
    path = tmp_path / "picture.png"
    path.write_bytes(image)
    argv = [str(RKLLMCTL), "--socket", str(vision_daemon.socket), "run", VL_ID]
    argv += ["--image", str(path), "See?", "--temperature", "0", "-q"]
    run = subprocess.run(
        argv,
        env={k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == answer["message"]["content"]  # the same image, the same reply
    first, second = call_log.calls("rkllm_multimodal")
    assert first["digests"] == second["digests"]
    assert [c["pixels_digest"] for c in call_log.calls("rknn_inputs_set")] == [
        call_log.calls("rknn_inputs_set")[0]["pixels_digest"]
    ] * 2
