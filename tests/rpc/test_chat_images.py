"""Image parts in the RPC ``chat`` method and ``rkllmctl run --image``, against a
daemon whose model has a projector fabricated at test time next to it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.mmproj import IMAGE_TOKENS, write_mmproj
from tests.fixtures.pictures import BLUE, RED, b64
from tests.helpers import MODEL_ID, DaemonProcess, RpcError

RKLLMCTL = Path(sys.executable).with_name("rkllmctl")


@pytest.fixture
def seeing(start_daemon, smol_dir: Path) -> DaemonProcess:  # type: ignore[no-untyped-def]
    write_mmproj(smol_dir / "SmolLM2-mmproj-f32.gguf")
    return start_daemon(smol_dir, args=["--load", MODEL_ID])


def chat(daemon: DaemonProcess, *images: bytes, **extra: object) -> dict:  # type: ignore[type-arg]
    parts = [{"type": "image", "data": b64(i), "mime_type": "image/png"} for i in images]
    content = [*parts, {"type": "text", "text": "What is in the picture?"}]
    messages = [{"role": "user", "content": content}]
    return daemon.call(  # type: ignore[no-any-return]
        "chat", model=MODEL_ID, messages=messages, temperature=0.0, max_tokens=12, **extra
    )


def test_rpc_chat_image_parts(seeing: DaemonProcess) -> None:
    one, two = chat(seeing, RED), chat(seeing, RED, BLUE)
    assert two["usage"]["prompt_tokens"] - one["usage"]["prompt_tokens"] == IMAGE_TOKENS
    assert chat(seeing, BLUE)["message"]["content"] != one["message"]["content"]
    assert chat(seeing, RED, stream=True)["message"]["content"] == one["message"]["content"]
    shown = seeing.call("show", model=MODEL_ID)
    assert shown["props"]["vision"] is True
    with pytest.raises(RpcError) as refused:
        seeing.call(
            "chat",
            model=MODEL_ID,
            messages=[{"role": "user", "content": [{"type": "image", "data": "http://x/a.png"}]}],
        )
    assert refused.value.data["code"] == "invalid_image"


def rkllmctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    return subprocess.run(
        [str(RKLLMCTL), "--socket", str(daemon.socket), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_rkllmctl_run_image(seeing: DaemonProcess, tmp_path: Path) -> None:
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    red.write_bytes(RED)
    blue.write_bytes(BLUE)
    greedy = ("--temperature", "0", "--max-tokens", "12", "-q")
    first = rkllmctl(seeing, "run", MODEL_ID, "--image", str(red), "What is it?", *greedy)
    assert first.returncode == 0, first.stderr
    again = rkllmctl(seeing, "run", MODEL_ID, "--image", str(red), "What is it?", *greedy)
    other = rkllmctl(seeing, "run", MODEL_ID, "--image", str(blue), "What is it?", *greedy)
    assert first.stdout.strip() and first.stdout == again.stdout != other.stdout
    missing = rkllmctl(seeing, "run", MODEL_ID, "--image", str(tmp_path / "none.png"), "hi")
    assert missing.returncode == 2 and "cannot read image" in missing.stderr
    not_image = tmp_path / "notes.txt"
    not_image.write_text("hello")
    refused = rkllmctl(seeing, "run", MODEL_ID, "--image", str(not_image), "hi")
    assert refused.returncode == 1 and "not a JPEG, PNG or WebP" in refused.stderr
