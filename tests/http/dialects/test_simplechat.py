"""The simple chat / LM Studio proxy dialect (../shared/seeds/003_*), with the document's
own bodies: the models it names exist here (copies of SmolLM2 under their keys), the
defaults are the document's .env values, and every answer and error shape is checked
field by field."""

from __future__ import annotations

import base64
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.helpers import MODEL_ID, place_model
from tests.http.conftest import manager_of

REGULAR = "qwen/qwen3-4b-2507"  # DEFAULT_REGULAR_MODEL in the document's .env
VISION = "qwen3-vl-4b-instruct"  # DEFAULT_VISION_MODEL
SEED_DEFAULTS = {"default_regular_model": REGULAR, "default_vision_model": VISION}

# The document's request bodies, as written.
LOAD = {"model_key": "qwen/qwen3-4b-2507", "exclusive": True}
UNLOAD_ONE = {"model_key": "qwen/qwen3-4b-2507"}
UNLOAD_ALL = {"unload_all": True}
REGULAR_CHAT = {
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is 2+2?"},
    ],
    "config": {"temperature": 0.7, "maxTokens": 100},
}
REGULAR_STREAM = {
    "messages": [{"role": "user", "content": "Explain quantum physics in one sentence"}]
}
VISION_CHAT = {
    "messages": [
        {
            "role": "user",
            "content": "What is in this image?",
            "images": [{"data_base64": "<BASE64_ENCODED_IMAGE>", "mime_type": "image/jpeg"}],
        }
    ],
    "config": {"temperature": 0.6, "maxTokens": 200},
}
VISION_STREAM = {
    "messages": [
        {
            "role": "user",
            "content": "Describe this image in detail",
            "images": [{"data_base64": "<BASE64_ENCODED_IMAGE>", "mime_type": "image/jpeg"}],
        }
    ]
}
CUSTOM_CHAT = {"model_key": "my-custom-model", "messages": [{"role": "user", "content": "Hello!"}]}
ROUTES = {
    ("GET", "/health"),
    ("GET", "/help"),
    ("GET", "/models"),
    ("POST", "/models/load"),
    ("POST", "/models/unload"),
    ("POST", "/chat"),
    ("POST", "/chat/stream"),
    ("POST", "/chat/regular"),
    ("POST", "/chat/regular/stream"),
    ("POST", "/chat/vision"),
    ("POST", "/chat/vision/stream"),
}


def jpeg() -> str:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(out, format="JPEG")
    return base64.b64encode(out.getvalue()).decode()


def with_image(body: dict[str, Any], data: str) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    body["messages"][0]["images"][0]["data_base64"] = data
    return body


@pytest.fixture
def seed_models(smol_dir: Path) -> Path:
    (smol_dir / "qwen").mkdir()
    place_model(smol_dir / "qwen", "qwen3-4b-2507.gguf")
    place_model(smol_dir, f"{VISION}.gguf")
    return smol_dir


@pytest.fixture
async def proxy(make_client, seed_models: Path) -> Any:
    return await make_client(simplechat=SEED_DEFAULTS)


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


async def test_help_lists_every_route_with_examples(proxy) -> None:
    body = await (await proxy.get("/help")).json()
    listed = {(r["method"], r["path"]) for r in body["routes"]}
    assert listed == ROUTES
    by_path = {r["path"]: r for r in body["routes"] if r["method"] == "POST"}
    assert by_path["/models/load"]["example"] == LOAD
    assert by_path["/chat"]["example"] == CUSTOM_CHAT
    assert all(r["description"] for r in body["routes"])
    assert set(body["config"]) == {
        "temperature",
        "maxTokens",
        "topP",
        "presencePenalty",
        "frequencyPenalty",
    }
    for method, path in ROUTES:  # every listed route exists
        response = await proxy.request(method, path, json={} if method == "POST" else None)
        assert response.status != 404, path


async def test_model_management_as_written(proxy) -> None:
    models = await (await proxy.get("/models")).json()
    assert models["count"] == 1
    (loaded,) = models["models"]
    assert loaded["model_key"] == MODEL_ID and loaded["state"] == "ready"
    assert loaded["vision"] is False and loaded["context_length"] == 4096
    assert loaded["max_context_length"] == 8192

    response = await proxy.post("/models/load", json=LOAD)
    body = await response.json()
    assert response.status == 200
    assert body["loaded"] is True and body["model_key"] == "qwen3-4b-2507"
    assert body["exclusive"] is True and body["unloaded"] == [MODEL_ID]
    assert "every load is exclusive" in body["note"]
    models = await (await proxy.get("/models")).json()
    assert [m["model_key"] for m in models["models"]] == ["qwen3-4b-2507"]
    assert models["models"][0]["path"] == "qwen/qwen3-4b-2507.gguf"

    # exclusive: false cannot be honoured, and the answer says so.
    body = await (await proxy.post("/models/load", json={"model_key": "smollm2"})).json()
    assert body["unloaded"] == ["qwen3-4b-2507"]
    body = await (
        await proxy.post("/models/load", json={"model_key": REGULAR, "exclusive": False})
    ).json()
    assert body["exclusive"] is True and "cannot be honoured" in body["note"]

    unloaded = await (await proxy.post("/models/unload", json=UNLOAD_ONE)).json()
    assert unloaded == {"unloaded": ["qwen3-4b-2507"], "count": 1}
    assert await (await proxy.get("/models")).json() == {"models": [], "count": 0}
    await proxy.post("/models/load", json=LOAD)
    other = await (await proxy.post("/models/unload", json={"model_key": "smollm2"})).json()
    assert other["unloaded"] == [] and MODEL_ID in other["message"]  # not the loaded one
    everything = await (await proxy.post("/models/unload", json=UNLOAD_ALL)).json()
    assert everything == {"unloaded": ["qwen3-4b-2507"], "count": 1}


async def test_model_management_errors(proxy) -> None:
    # The document's "Model Not Found": {"loaded": false, "error": "Failed to load model: ..."}
    response = await proxy.post("/models/load", json={"model_key": "qwen/qwen3-8b"})
    body = await response.json()
    assert response.status == 404
    assert body["loaded"] is False and body["code"] == "model_not_found"
    assert body["error"].startswith("Failed to load model: model 'qwen/qwen3-8b' not found")
    assert MODEL_ID in body["available"] and body["model_key"] == "qwen/qwen3-8b"
    # A bad body: FastAPI's {"detail"} shape with the stable code.
    response = await proxy.post("/models/load", json={"exclusive": True})
    body = await response.json()
    assert response.status == 400 and body["code"] == "invalid_params"
    assert body["param"] == "model_key" and body["detail"].startswith("model_key")
    response = await proxy.post("/models/unload", json={})
    body = await response.json()
    assert response.status == 400 and body["code"] == "invalid_params"
    response = await proxy.post("/models/unload", json={"model_key": "nope-nope"})
    assert response.status == 404 and (await response.json())["code"] == "model_not_found"


async def test_regular_chat_as_written(proxy) -> None:
    response = await proxy.post("/chat/regular", json=REGULAR_CHAT)
    body = await response.json()
    assert response.status == 200 and set(body) == {
        "model",
        "content",
        "stop_reason",
        "predicted_tokens",
    }
    assert body["model"] == "qwen3-4b-2507"  # DEFAULT_REGULAR_MODEL, loaded on request
    assert isinstance(body["content"], str) and body["content"]
    assert body["stop_reason"] in ("stop", "length") and 1 <= body["predicted_tokens"] <= 100

    response = await proxy.post("/chat/regular/stream", json=REGULAR_STREAM)
    assert response.headers["Content-Type"].startswith("application/x-ndjson")
    lines = ndjson(await response.text())
    fragments, done = lines[:-1], lines[-1]
    assert fragments and all(set(f) == {"type", "content"} for f in fragments)
    assert {f["type"] for f in fragments} == {"fragment"}
    assert set(done) == {"type", "model", "predicted_tokens", "stop_reason"}
    assert done["type"] == "done" and done["model"] == "qwen3-4b-2507"
    assert done["predicted_tokens"] >= len(fragments) - 1


async def test_custom_model_chat_honours_model_key(proxy) -> None:
    response = await proxy.post("/chat", json=CUSTOM_CHAT)
    body = await response.json()
    assert response.status == 404
    assert body["code"] == "model_not_found"
    assert body["detail"].startswith("Chat service unavailable: model 'my-custom-model' not found")
    assert MODEL_ID in body["available"]
    stream = await proxy.post("/chat/stream", json=CUSTOM_CHAT)
    assert stream.status == 404 and (await stream.json())["code"] == "model_not_found"

    named = {**CUSTOM_CHAT, "model_key": "qwen/qwen3-4b-2507"}
    body = await (await proxy.post("/chat", json=named)).json()
    assert body["model"] == "qwen3-4b-2507"  # loaded for this request
    body = await (await proxy.post("/chat", json={"messages": CUSTOM_CHAT["messages"]})).json()
    assert body["model"] == "qwen3-4b-2507"  # no key: the resident model


async def test_vision_routes_check_images_and_never_drop_them(proxy) -> None:
    for path in ("/chat/vision", "/chat/vision/stream"):
        body = VISION_CHAT if path == "/chat/vision" else VISION_STREAM
        # As written, the placeholder is not base64.
        response = await proxy.post(path, json=body)
        error = await response.json()
        assert response.status == 400 and error["code"] == "invalid_image"
        assert error["detail"] == "image 0 is not valid base64"
        # A real JPEG: the default vision model cannot see it, so it is refused.
        response = await proxy.post(path, json=with_image(body, jpeg()))
        error = await response.json()
        assert response.status == 400 and error["code"] == "model_has_no_vision"
        assert error["model"] == VISION and error["images"] == 1
        assert error["detail"].startswith(f"{VISION} cannot see images")
    # Images are accepted on every chat route, and refused the same way.
    for path in ("/chat", "/chat/regular", "/chat/regular/stream", "/chat/stream"):
        response = await proxy.post(path, json=with_image(VISION_CHAT, jpeg()))
        assert (await response.json())["code"] == "model_has_no_vision", path
    assert manager_of(proxy).status().counters["generations"] == 0  # none was answered


async def test_image_validation_at_the_edge(proxy) -> None:
    png_as_jpeg = with_image(VISION_CHAT, jpeg())
    png_as_jpeg["messages"][0]["images"][0]["mime_type"] = "image/gif"
    error = await (await proxy.post("/chat/vision", json=png_as_jpeg)).json()
    assert error["code"] == "invalid_image" and "image/gif" in error["detail"]
    many = with_image(VISION_CHAT, jpeg())
    many["messages"][0]["images"] *= 9
    error = await (await proxy.post("/chat/vision", json=many)).json()
    assert error["code"] == "invalid_image" and error["limit"] == 8
    url = with_image(VISION_CHAT, "data:image/jpeg;base64," + jpeg())
    url["messages"][0]["images"][0].pop("mime_type")
    error = await (await proxy.post("/chat/vision", json=url)).json()
    assert error["code"] == "model_has_no_vision"  # a data URL is a valid image


async def test_service_errors_keep_the_proxys_shape(make_client, seed_models: Path) -> None:
    idle = await make_client(load=False)
    response = await idle.post("/chat", json={"messages": CUSTOM_CHAT["messages"]})
    body = await response.json()
    assert response.status == 400 and body["code"] == "no_model_loaded"
    assert body["detail"].startswith("Chat service unavailable: no model is loaded")
    assert await (await idle.get("/models")).json() == {"models": [], "count": 0}
    bad = await idle.post("/chat/regular", json={**REGULAR_CHAT, "config": {"maxTokens": -1}})
    body = await bad.json()
    assert bad.status == 400 and body["code"] == "invalid_params"
    assert body["param"] == "config.maxTokens" and "detail" in body


async def test_camel_case_config_reaches_the_sampler(proxy) -> None:
    body = {
        "model_key": MODEL_ID,
        "messages": [{"role": "user", "content": "Say hello"}],
        "config": {
            "temperature": 0,
            "maxTokens": 6,
            "topP": 0.9,
            "presencePenalty": 0,
            "frequencyPenalty": 0,
        },
    }
    whole = await (await proxy.post("/chat", json=body)).json()
    streamed = ndjson(await (await proxy.post("/chat/stream", json=body)).text())
    assert whole["predicted_tokens"] <= 6 and streamed[-1]["predicted_tokens"] <= 6
    assert "".join(f["content"] for f in streamed[:-1]) == whole["content"]  # greedy: same text


def test_the_documents_curl_commands(start_daemon, seed_models: Path) -> None:  # type: ignore[no-untyped-def]
    """The document's curl examples, as written but for the port, against a real daemon
    configured with its .env defaults."""
    daemon = start_daemon(
        seed_models,
        args=["--load", "smollm2"],
        env={
            "RKLLMD_SIMPLECHAT__DEFAULT_REGULAR_MODEL": REGULAR,
            "RKLLMD_SIMPLECHAT__DEFAULT_VISION_MODEL": VISION,
        },
    )

    def curl(command: str) -> str:
        command = command.replace("127.0.0.1:8000", f"127.0.0.1:{daemon.http_port}")
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=120, check=True
        )
        return done.stdout

    regular = json.loads(
        curl(
            """curl -X POST http://127.0.0.1:8000/chat/regular \\
  -H "Content-Type: application/json" \\
  -d '{
    "messages": [
      {"role": "system", "content": "You are a helpful assistant."},
      {"role": "user", "content": "What is 2+2?"}
    ],
    "config": {
      "temperature": 0.7,
      "maxTokens": 100
    }
  }'"""
        )
    )
    assert regular["model"] == "qwen3-4b-2507" and regular["content"]
    lines = ndjson(
        curl(
            """curl -N -X POST http://127.0.0.1:8000/chat/regular/stream \\
  -H "Content-Type: application/json" \\
  -d '{
    "messages": [
      {"role": "user", "content": "Explain quantum physics in one sentence"}
    ]
  }'"""
        )
    )
    assert lines[0]["type"] == "fragment" and lines[-1]["type"] == "done"
    vision = json.loads(
        curl(
            """curl -X POST http://127.0.0.1:8000/chat/vision \\
  -H "Content-Type: application/json" \\
  -d '{
    "messages": [
      {
        "role": "user",
        "content": "What is in this image?",
        "images": [{
          "data_base64": "<BASE64_ENCODED_IMAGE>",
          "mime_type": "image/jpeg"
        }]
      }
    ],
    "config": {
      "temperature": 0.6,
      "maxTokens": 200
    }
  }'"""
        )
    )
    assert vision == {"detail": "image 0 is not valid base64", "code": "invalid_image"}
    custom = json.loads(
        curl(
            """curl -X POST http://127.0.0.1:8000/chat \\
  -H "Content-Type: application/json" \\
  -d '{
    "model_key": "my-custom-model",
    "messages": [
      {"role": "user", "content": "Hello!"}
    ]
  }'"""
        )
    )
    assert custom["code"] == "model_not_found" and "my-custom-model" in custom["detail"]
