"""The official openai client against a real rkllmd process and SmolLM2."""

from __future__ import annotations

import os
import signal
import socket

import openai
import pytest

from tests.helpers import MODEL_ID, long_chat_stream, read_http_response, wait_for


@pytest.fixture
def api(daemon) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="unused", max_retries=0) as client:
        yield client


MESSAGES = [{"role": "user", "content": "Say hello"}]


def test_models_list(api: openai.OpenAI) -> None:
    assert [m.id for m in api.models.list()] == [MODEL_ID]
    assert api.models.retrieve(MODEL_ID).id == MODEL_ID


def test_chat_create_and_stream(api: openai.OpenAI) -> None:
    whole = api.chat.completions.create(
        model="smollm2", messages=MESSAGES, max_tokens=6, temperature=0, seed=1
    )
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    chunks = list(
        api.chat.completions.create(
            model="smollm2",
            messages=MESSAGES,
            max_tokens=6,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]


def test_completions_create_and_stream(api: openai.OpenAI) -> None:
    whole = api.completions.create(
        model="smollm2", prompt="Once upon a time", max_tokens=5, temperature=0
    )
    assert whole.usage is not None and whole.usage.completion_tokens == 5
    pieces = list(
        api.completions.create(
            model="smollm2", prompt="Once upon a time", max_tokens=5, stream=True
        )
    )
    assert pieces[-1].choices[0].finish_reason == "length"


def test_embeddings_create(api: openai.OpenAI) -> None:
    result = api.embeddings.create(model="smollm2", input=["alpha", "beta"])
    assert len(result.data) == 2 and len(result.data[0].embedding) > 100


def test_sampling_parameters_are_honoured(api: openai.OpenAI) -> None:
    story = [{"role": "user", "content": "Tell a story."}]
    api.chat.completions.create(
        model="smollm2", messages=story, max_tokens=12, temperature=1.0, seed=42
    )
    a = api.chat.completions.create(
        model="smollm2", messages=story, max_tokens=12, temperature=1.0, seed=42
    )
    b = api.chat.completions.create(
        model="smollm2", messages=story, max_tokens=12, temperature=1.0, seed=42
    )
    assert a.choices[0].message.content == b.choices[0].message.content

    # Same prompt, same (warm) cache state each time: only the penalties differ.
    def greedy(**penalties: float) -> str:
        reply = api.chat.completions.create(
            model="smollm2", messages=MESSAGES, max_tokens=20, temperature=0, **penalties
        )
        return reply.choices[0].message.content or ""

    greedy()
    plain = greedy()
    assert greedy() == plain
    assert greedy(presence_penalty=2.0, frequency_penalty=2.0) != plain
    short = api.chat.completions.create(
        model="smollm2", messages=story, temperature=0, max_tokens=2
    )
    assert short.usage is not None and short.usage.completion_tokens == 2


def test_error_shapes_through_the_client(api: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as invalid:
        api.chat.completions.create(model="../no-such-model", messages=MESSAGES)
    assert invalid.value.code == "invalid_model_name"
    # A name that resolves to nothing is answered by the resident model (the default
    # http.unknown_model = "resident"), which the reply names.
    raw = api.chat.completions.with_raw_response.create(
        model="no-such-model", messages=MESSAGES, max_tokens=2
    )
    assert raw.headers["X-Rkllmd-Model-Not-Found"] == "no-such-model"
    assert raw.parse().model == MODEL_ID
    with pytest.raises(openai.BadRequestError) as bad:
        api.chat.completions.create(model="smollm2", messages=MESSAGES, temperature=9)
    assert bad.value.code == "invalid_params"


def test_queue_full_is_503_with_retry_after(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    # One generation at a time: the first stream fills the only slot (the engine's
    # parallel slots have their own queue test in tests/backends).
    env = {"RKLLMD_QUEUE__MAX_WAITING": "0", "RKLLMD_LLAMACPP__PARALLEL": "1"}
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"], env=env)
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        stream = long_chat_stream(client)
        next(iter(stream))
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
        assert err.value.status_code == 503 and err.value.code == "queue_full"
        assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
        stream.close()


def test_disconnect_mid_stream_aborts(daemon) -> None:  # type: ignore[no-untyped-def]
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        stream = long_chat_stream(client)
        for _, _chunk in zip(range(3), stream, strict=False):
            pass
        stream.close()
    wait_for(
        lambda: (s := daemon.call("status"))["counters"]["aborted"] == 1 and s["state"] == "ready",
        30,
        "abort after disconnect, then ready",
    )


def test_disconnect_during_prefill_aborts(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"])
    body = (
        b'{"model":"smollm2","stream":true,"max_tokens":2000,"temperature":0,'
        b'"messages":[{"role":"user","content":"' + b"word " * 3000 + b'"}]}'
    )
    with socket.create_connection(("127.0.0.1", daemon.http_port)) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        wait_for(lambda: daemon.call("status")["state"] == "generating", 10, "prefill to start")
    wait_for(lambda: daemon.call("status")["state"] == "ready", 60, "slot freed after disconnect")
    counters = daemon.call("status")["counters"]
    assert counters["aborted"] == 1 and counters["completed"] == 0


def test_error_after_first_byte_is_an_sse_event(daemon) -> None:  # type: ignore[no-untyped-def]
    worker = daemon.call("status")["worker_pid"]
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        stream = long_chat_stream(client)
        iterator = iter(stream)
        next(iterator)
        os.kill(worker, signal.SIGKILL)
        with pytest.raises(openai.APIError) as err:
            for _ in iterator:
                pass
        assert "worker" in str(err.value.message)
    assert daemon.call("status")["state"] == "failed"


def test_no_model_and_loading_disabled_is_400(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(smol_dir, env={"RKLLMD_GENERATION__LOAD_ON_REQUEST": "false"})
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2", messages=MESSAGES)
        assert err.value.code == "no_model_loaded" and "disabled" in str(err.value)


def test_cold_model_loads_on_request(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(smol_dir)
    assert daemon.call("status")["state"] == "idle"
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        reply = client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
    assert reply.model == MODEL_ID and daemon.call("status")["state"] == "ready"


def test_load_failure_is_500_with_reason(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    (smol_dir / "broken.gguf").write_bytes(b"GGUF" + os.urandom(2000))
    os.utime(smol_dir / "broken.gguf", (1, 1))
    daemon = start_daemon(smol_dir)
    with (
        openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.InternalServerError) as err,
    ):
        client.chat.completions.create(model="broken", messages=MESSAGES)
    assert err.value.code == "load_failed" and str(smol_dir) not in str(err.value)
    health = daemon.call("status")
    assert health["state"] == "failed"


def test_slow_body_gets_408_and_idle_keepalive_closes(start_daemon, models_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(
        models_dir,
        env={"RKLLMD_HTTP__BODY_TIMEOUT_SECONDS": "1", "RKLLMD_HTTP__KEEPALIVE_SECONDS": "1"},
    )
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=30) as conn:
        conn.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        reply = read_http_response(conn)
        assert b" 408 " in reply.split(b"\r\n", 1)[0] and b"request_timeout" in reply
    # keepalive is 1 s: a server that never closes makes recv() time out and the test fail.
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=30) as idle:
        idle.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert b" 200 " in read_http_response(idle).split(b"\r\n", 1)[0]
        assert idle.recv(4096) == b""  # the server closed the idle keep-alive connection


def test_malformed_http_does_not_flood_the_log(start_daemon, models_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(models_dir, args=["--log-level", "info"])
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as conn:
            conn.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bad: a\x00b\r\n\r\n")
            assert b" 400 " in conn.recv(4096).split(b"\r\n", 1)[0]
    assert "Traceback" not in daemon.log() and "Error handling request" not in daemon.log()
    assert daemon.call("status")["state"] == "idle"
