"""The official ollama client (PyPI ``ollama``) against a real daemon and SmolLM2, pulling
from the project's Hub stand-in."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import jsonschema
import ollama
import pytest

from tests.helpers import (
    MODEL_ID,
    DaemonProcess,
    model_source,
    place_model,
    running_daemon,
    short_tempdir,
)
from tests.store.hubstub import HubStub

pytestmark = pytest.mark.real_model

REPO = "test-org/Tiny-Chat-GGUF"
PNG_1X1 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQI12P4z8AAAAMBAQAY3Y2wAAAAAElFTkSuQmCC"
)


@pytest.fixture(scope="module")
def hub() -> Iterator[HubStub]:
    stub = HubStub().start()
    stub.add_repo(REPO, {"tiny-chat-Q4_1.gguf": model_source(), "README.md": b"# tiny\n"})
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def daemon(hub: HubStub) -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    env = {"RKLLMD_HUB__ENDPOINT": hub.url, "RKLLMD_HUB__MIN_FREE_BYTES": "0"}
    with running_daemon(models, args=["--load", "smollm2"], env=env) as started:
        yield started
    shutil.rmtree(models.parent, ignore_errors=True)


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[ollama.Client]:
    api = ollama.Client(host=daemon.http_url)
    yield api
    api._client.close()


def test_version_list_show_ps(client: ollama.Client) -> None:
    assert client._client.get("/api/version").json()["version"]
    names = [m.model for m in client.list().models]
    assert f"{MODEL_ID}:latest" in names
    listed = next(m for m in client.list().models if m.model == f"{MODEL_ID}:latest")
    assert listed.size and listed.digest and listed.details and listed.details.format == "gguf"
    assert listed.details.quantization_level == "Q4_1" and listed.modified_at is not None
    shown = client.show("smollm2:latest")
    assert shown.capabilities and "completion" in shown.capabilities
    assert shown.details and shown.details.family == "llama"
    assert shown.template  # the resident model's chat template
    running = client.ps().models
    assert [m.model for m in running] == [f"{MODEL_ID}:latest"]
    assert running[0].context_length and running[0].expires_at is not None


def test_chat_whole_and_streamed(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    whole = client.chat(
        model="smollm2", messages=messages, options={"temperature": 0, "num_predict": 8}
    )
    assert whole.done and whole.done_reason == "length" and whole.message.content
    assert whole.eval_count == 8 and whole.prompt_eval_count and whole.prompt_eval_count > 0
    assert whole.total_duration and whole.eval_duration is not None
    parts = list(
        client.chat(
            model="smollm2:latest",
            messages=messages,
            stream=True,
            options={"temperature": 0, "num_predict": 8, "seed": 3},
        )
    )
    assert [p.done for p in parts][-1] is True and not any(p.done for p in parts[:-1])
    assert parts[-1].eval_count == 8 and parts[-1].done_reason == "length"
    assert "".join(p.message.content or "" for p in parts)


def test_chat_format_schema(client: ollama.Client) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    reply = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "Name a big city and its population."}],
        format=schema,
        options={"num_predict": 300, "temperature": 0},
    )
    jsonschema.validate(json.loads(reply.message.content or ""), schema)
    plain = client.chat(
        model="smollm2",
        messages=[{"role": "user", "content": "Answer in JSON: what colour is the sky?"}],
        format="json",
        options={"num_predict": 200, "temperature": 0},
    )
    if plain.done_reason == "stop":
        assert isinstance(json.loads(plain.message.content or ""), dict)


def get_weather(city: str) -> str:
    """The weather in a city.

    Args:
      city: The city's name
    """
    return f"sunny in {city}"


def test_chat_with_tools_round_trip(client: ollama.Client) -> None:
    messages = [
        {"role": "system", "content": "Use the tools to answer."},
        {"role": "user", "content": "What is the weather in Paris?"},
    ]
    first = client.chat(
        model="smollm2", messages=messages, tools=[get_weather], options={"temperature": 0}
    )
    assert first.done
    calls = first.message.tool_calls or []
    for call in calls:  # a call, when the model makes one, has object arguments
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    history = [
        *messages,
        first.message,
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    second = client.chat(
        model="smollm2", messages=history, tools=[get_weather], options={"num_predict": 20}
    )
    assert second.done and second.message.role == "assistant"


def test_generate_whole_streamed_and_raw(client: ollama.Client) -> None:
    whole = client.generate(
        model="smollm2", prompt="Why is the sky blue?", options={"num_predict": 6}
    )
    assert whole.done and whole.response and whole.eval_count == 6
    parts = list(
        client.generate(
            model="smollm2",
            prompt="Count: one, two,",
            raw=True,
            stream=True,
            options={"num_predict": 5},
        )
    )
    assert parts[-1].done and parts[-1].eval_count == 5
    assert (
        parts[-1].prompt_eval_count is not None and parts[-1].prompt_eval_count < 12
    )  # no template
    with pytest.raises(ollama.ResponseError) as refused:
        client.generate(model="smollm2", prompt="def f():", suffix="    return 1")
    assert refused.value.status_code == 400 and "fill-in-the-middle" in refused.value.error


def test_embed_and_embeddings(client: ollama.Client) -> None:
    result = client.embed(model="smollm2", input=["alpha", "beta"])
    assert len(result.embeddings) == 2 and len(result.embeddings[0]) > 100
    assert result.prompt_eval_count and result.prompt_eval_count >= 2
    one = client.embeddings(model="smollm2", prompt="alpha")
    assert one.embedding == pytest.approx(result.embeddings[0], abs=1e-5)
    with pytest.raises(ollama.ResponseError) as refused:
        client.embed(model="smollm2", input="alpha", dimensions=8)
    assert refused.value.status_code == 400 and "dimensions" in refused.value.error


def test_errors_are_ollama_shaped(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404 and "no-such-model" in missing.value.error
    with pytest.raises(ollama.ResponseError) as blind:
        client.chat(
            model="smollm2",
            messages=[{"role": "user", "content": "What is this?", "images": [PNG_1X1]}],
        )
    assert blind.value.status_code == 400 and "cannot see images" in blind.value.error
    with pytest.raises(ollama.ResponseError) as streamed:
        list(client.generate(model="smollm2", prompt="hi", images=[PNG_1X1], stream=True))
    assert streamed.value.status_code == 400


def test_keep_alive_zero_unloads_and_an_empty_chat_loads(client: ollama.Client) -> None:
    reply = client.generate(model="smollm2", prompt="Hi", keep_alive=0, options={"num_predict": 2})
    assert reply.done
    running = client.ps().models
    for _ in range(100):
        if not running:
            break
        running = client.ps().models
    assert running == []
    loaded = client.chat(model="smollm2", messages=[])
    assert loaded.done_reason == "load" and [m.model for m in client.ps().models] == [
        f"{MODEL_ID}:latest"
    ]
    client.generate(model="smollm2", prompt="Hi", keep_alive="-1", options={"num_predict": 1})
    assert client.ps().models[0].expires_at.year == 9999  # type: ignore[union-attr]


def test_pull_from_the_hub_show_and_delete(client: ollama.Client, daemon: DaemonProcess) -> None:
    progress = list(client.pull(f"hf.co/{REPO}:Q4_1", stream=True))
    statuses = [p.status for p in progress]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    downloads = [p for p in progress if p.status and p.status.startswith("pulling tiny-chat")]
    assert (
        downloads
        and downloads[-1].completed == downloads[-1].total == model_source().stat().st_size
    )
    assert (daemon.models_dir / REPO / "tiny-chat-Q4_1.gguf").is_file()
    name = f"hf.co/{REPO}:Q4_1"
    assert client.show(name).details.quantization_level == "Q4_1"  # type: ignore[union-attr]
    reply = client.generate(model=name, prompt="Hi", options={"num_predict": 2})
    assert reply.done and reply.eval_count == 2
    assert client.delete(name).status == "success"
    assert not (daemon.models_dir / REPO / "tiny-chat-Q4_1.gguf").exists()
    with pytest.raises(ollama.ResponseError) as gone:
        client.show(name)
    assert gone.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as library:
        client.pull("llama3.2")
    assert library.value.status_code == 400 and "hf.co/" in library.value.error
    client.chat(model="smollm2", messages=[])  # leave SmolLM2 loaded for what follows
