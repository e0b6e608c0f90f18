"""RockchipLlama's model management guide (../shared/seeds/000_*), run as written.

A real daemon serves the guide's three .rkllm models through the NPU double (the fake
backend in the fast tier). The guide's curl commands run through curl, its HTTPie
commands through HTTPie, its Python examples through requests and the openai client;
only the port differs. Every answer
is checked field by field against the guide's, and so is every error it describes.
"""

from __future__ import annotations

import json
import os
import pty
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest
import requests

from tests.backends.conftest import NpuDaemon
from tests.fixtures.build_double import write_model
from tests.helpers import MODEL_ID, DaemonProcess, place_model

GEMMA = "google_gemma-3-270m-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588"
QWEN = "Qwen_Qwen3-0.6B-w8a8-rk3588"
GEMMA_1B = "gemma-3-1b-it_w8a8"
NOT_FOUND = "X-Rkllmd-Model-Not-Found"


@pytest.fixture
def guide_models(npu_models: Path) -> Path:
    """The guide's "Your Models": three .rkllm files (and the double's own)."""
    for path in npu_models.iterdir():
        path.unlink()
    write_model(npu_models, f"{GEMMA}.rkllm", max_context_limit=16384)
    write_model(npu_models, f"{QWEN}.rkllm")
    write_model(npu_models, f"{GEMMA_1B}.rkllm")
    return npu_models


@pytest.fixture
def guide(guide_models: Path, npu_daemon: NpuDaemon) -> DaemonProcess:
    return npu_daemon(load=False)


def curl(daemon: DaemonProcess, command: str) -> Any:
    """One of the guide's curl commands, on the daemon's port; the JSON it printed."""
    command = command.replace("localhost:8080", f"localhost:{daemon.http_port}")
    out = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_quick_start_as_written(guide: DaemonProcess) -> None:
    # 1. Check Available Models
    available = curl(guide, "curl http://localhost:8080/v1/models/available | jq")
    assert available["total"] == 3 and available["loaded_model"] is None
    assert [m["name"] for m in available["models"]] == sorted([GEMMA, QWEN, GEMMA_1B])
    for model in available["models"]:
        assert set(model) >= {"name", "size_mb", "loaded"}
        assert model["loaded"] is False and isinstance(model["size_mb"], int | float)

    # 2. Load a Model
    loaded = curl(
        guide,
        """curl -X POST http://localhost:8080/v1/models/load \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "google_gemma-3-270m-w8a8-opt0-hybrid0-npu3-ctx16384-rk3588",
    "max_context_len": 512,
    "num_npu_core": 3
  }'""",
    )
    assert loaded["success"] is True and loaded["loaded"] is True
    assert loaded["model_name"] == GEMMA
    assert loaded["message"] == f"Model {GEMMA} loaded successfully"
    assert guide.call("status")["options"] == {"ctx_size": 512}

    # 3. Check Loaded Model
    current = curl(guide, "curl http://localhost:8080/v1/models/loaded | jq")
    assert current["loaded"] is True and current["model_name"] == GEMMA
    assert current["model_path"] == f"{GEMMA}.rkllm"  # relative to the models directory

    # 4. Use Chat Completion (a short name: the unique prefix)
    chat = curl(
        guide,
        """curl -X POST http://localhost:8080/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{
    "model": "google_gemma-3-270m",
    "messages": [{"role": "user", "content": "Hello!"}],
    "max_tokens": 100
  }'""",
    )
    assert chat["model"] == GEMMA and chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"]

    # 5. Unload Model
    unloaded = curl(guide, "curl -X POST http://localhost:8080/v1/models/unload")
    assert unloaded["success"] is True and GEMMA in unloaded["message"]
    after = curl(guide, "curl http://localhost:8080/v1/models/loaded | jq")
    assert after == {"loaded": False, "model_name": None, "model_path": None, "state": "idle"}


def test_console_examples_with_model_test(guide: DaemonProcess) -> None:
    base = guide.http_url.replace("127.0.0.1", "localhost")
    # curl: the short name "gemma-3-270m" is a word inside the full name.
    loaded = curl(
        guide,
        """curl -X POST http://localhost:8080/v1/models/load \\
  -H "Content-Type: application/json" \\
  -d '{"model": "gemma-3-270m"}'""",
    )
    assert loaded["model_name"] == GEMMA
    raw = subprocess.run(
        [
            "bash",
            "-c",
            f"curl -si -X POST {shlex.quote(base)}/v1/chat/completions "
            """-H "Content-Type: application/json" """
            """-d '{"model": "test", "messages": [{"role": "user", "content": "Hi"}]}'""",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    head, _, body = raw.partition("\n\n")  # text mode has turned CRLF into LF
    assert head.startswith("HTTP/1.1 200")
    assert f"{NOT_FOUND}: test" in head.splitlines()
    assert json.loads(body)["model"] == GEMMA  # the model that really answered

    # Python requests, as written.
    response = requests.post(f"{base}/v1/models/load", json={"model": "gemma-3-270m"})
    assert response.json()["success"] is True
    response = requests.post(
        f"{base}/v1/chat/completions",
        json={"model": "test", "messages": [{"role": "user", "content": "Hello!"}]},
    )
    assert response.status_code == 200 and response.headers[NOT_FOUND] == "test"
    assert response.json()["model"] == GEMMA

    # The OpenAI client, as written (after loading through requests).
    client = openai.OpenAI(api_key="not-needed", base_url=f"{base}/v1")
    with client:
        reply = client.chat.completions.create(
            model="test", messages=[{"role": "user", "content": "Hello!"}]
        )
    assert reply.model == GEMMA and reply.choices[0].message.content

    # "With extension": another model, by its file name.
    response = requests.post(f"{base}/v1/models/load", json={"model": "gemma-3-1b-it_w8a8.rkllm"})
    assert response.json()["model_name"] == GEMMA_1B


def httpie(daemon: DaemonProcess, command: str) -> Any:
    """One of the guide's HTTPie commands, on the daemon's port; the JSON it printed.
    Its standard input is a terminal, as in the guide: HTTPie reads a piped one as the
    request body, and refuses to mix that with ``model=...`` items."""
    command = command.replace(":8080", f":{daemon.http_port}")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    terminal, stdin = pty.openpty()
    try:
        out = subprocess.run(
            ["bash", "-c", command],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env=env,
        )
    finally:
        os.close(stdin)
        os.close(terminal)
    return json.loads(out.stdout)


def test_httpie_examples_as_written(guide: DaemonProcess) -> None:
    available = httpie(guide, "http GET :8080/v1/models/available")
    assert sorted(m["name"] for m in available["models"]) == sorted([GEMMA, QWEN, GEMMA_1B])
    loaded = httpie(guide, "http POST :8080/v1/models/load model=gemma-3-270m")
    assert loaded["success"] is True and loaded["model_name"] == GEMMA
    chat = httpie(
        guide,
        """http POST :8080/v1/chat/completions \\
  model=test \\
  messages:='[{"role":"user","content":"Hi"}]'""",
    )
    assert chat["model"] == GEMMA and chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"]


def test_error_handling_as_the_guide_describes(guide: DaemonProcess) -> None:
    base = guide.http_url
    chat = {"messages": [{"role": "user", "content": "Hi"}]}
    # No model loaded: 400 with a helpful message.
    response = requests.post(f"{base}/v1/chat/completions", json=chat)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "no_model_loaded"
    assert "load one first" in error["message"]
    # An unknown name with nothing loaded: 404 listing the models.
    response = requests.post(f"{base}/v1/chat/completions", json={"model": "test", **chat})
    error = response.json()["error"]
    assert response.status_code == 404 and error["code"] == "model_not_found"
    assert NOT_FOUND not in response.headers
    # Model not found on load: 404 with the available models.
    response = requests.post(f"{base}/v1/models/load", json={"model": "llama-7b"})
    error = response.json()["error"]
    assert response.status_code == 404 and error["code"] == "model_not_found"
    assert sorted(error["details"]["available"]) == sorted([GEMMA, QWEN, GEMMA_1B])
    # More context than the conversion allows (ctx16384 in the name): refused at once.
    response = requests.post(
        f"{base}/v1/models/load", json={"model": GEMMA, "max_context_len": 32768}
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "load_failed"
    assert error["details"]["limit"] == 16384


@pytest.mark.real_model  # the double's failure modes (the fake backend has none)
def test_loading_failure_is_500_and_the_previous_model_keeps_serving(
    guide_models: Path, npu_daemon: NpuDaemon
) -> None:
    write_model(guide_models, "broken-model-rk3588.rkllm")
    guide = npu_daemon(
        load=False, env={"RKLLM_DOUBLE_FAIL": "init", "RKLLM_DOUBLE_FAIL_MODEL": "broken"}
    )
    base = guide.http_url
    assert requests.post(f"{base}/v1/models/load", json={"model": QWEN}).status_code == 200
    response = requests.post(f"{base}/v1/models/load", json={"model": "broken"})
    error = response.json()["error"]
    assert response.status_code == 500 and error["code"] == "load_failed"
    assert error["details"]["restored"] == QWEN
    current = requests.get(f"{base}/v1/models/loaded").json()
    assert current["loaded"] is True and current["model_name"] == QWEN
    health = requests.get(f"{base}/health")
    assert health.status_code == 200
    assert health.json()["load_failure"]["model"] == "broken-model-rk3588"
    reply = requests.post(
        f"{base}/v1/chat/completions",
        json={"model": "test", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert reply.status_code == 200 and reply.json()["model"] == QWEN


def test_unknown_model_error_mode(guide_models: Path, npu_daemon: NpuDaemon) -> None:
    guide = npu_daemon(load=False, env={"RKLLMD_HTTP__UNKNOWN_MODEL": "error"})
    base = guide.http_url
    requests.post(f"{base}/v1/models/load", json={"model": "gemma-3-270m"}).raise_for_status()
    response = requests.post(
        f"{base}/v1/chat/completions",
        json={"model": "test", "messages": [{"role": "user", "content": "Hi"}]},
    )
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert NOT_FOUND not in response.headers


@pytest.mark.real_model  # the fast tier's fake backend needs no runtime library
def test_missing_runtime_keeps_the_cpu_model_serving(
    guide_models: Path, npu_daemon: NpuDaemon
) -> None:
    place_model(guide_models)
    missing = str(guide_models.parent / "no-such-librkllmrt.so")
    guide = npu_daemon(load=False, env={"RKLLMD_RKLLM__LIBRARY": missing})
    base = guide.http_url
    requests.post(f"{base}/v1/models/load", json={"model": "smollm2"}).raise_for_status()
    response = requests.post(f"{base}/v1/models/load", json={"model": "gemma-3-270m"})
    error = response.json()["error"]
    assert response.status_code == 500 and error["code"] == "backend_unavailable"
    assert error["details"]["restored"] == MODEL_ID and missing not in error["message"]
    current = requests.get(f"{base}/v1/models/loaded").json()
    assert current["model_name"] == MODEL_ID and current["model_path"] == f"{MODEL_ID}.gguf"
