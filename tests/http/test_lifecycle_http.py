"""Keep-alive unload, pinning and per-request time limits over real HTTP."""

from __future__ import annotations

import re

import openai
import pytest

from tests.helpers import MODEL_ID, long_chat_stream, place_model, wait_for

MESSAGES = [{"role": "user", "content": "Say hello"}]


def _states(daemon) -> list[str]:  # type: ignore[no-untyped-def]
    """The daemon's states in the order it reported them (STATUS=<state> ...)."""
    lines = [m for m in list(daemon.notify.messages) if m.startswith("STATUS=")]
    return [re.split(r"[ ;]", line.removeprefix("STATUS="))[0] for line in lines]


def test_idle_model_is_unloaded_after_keep_alive(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(smol_dir, env={"RKLLMD_GENERATION__KEEP_ALIVE_SECONDS": "1"})
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
    wait_for(lambda: daemon.call("status")["state"] == "idle", 15, "idle unload")
    # The model stayed ready after the request and was unloaded only by the idle timer
    # (from the daemon's own state reports: a status call right after the request would
    # race the 1 s timer on a slow machine).
    wait_for(lambda: _states(daemon)[-1:] == ["idle"], 10, "the idle state report")
    assert _states(daemon)[-4:] == ["generating", "ready", "unloading", "idle"], _states(daemon)
    assert "after 1 s idle" in daemon.log()


def test_pinned_model_is_neither_idle_unloaded_nor_swapped(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    place_model(smol_dir, "second.gguf")
    daemon = start_daemon(
        smol_dir,
        args=["--load", "smollm2"],
        env={"RKLLMD_GENERATION__KEEP_ALIVE_SECONDS": "1", "RKLLMD_GENERATION__PIN": "smollm2"},
    )
    assert daemon.call("status")["pinned"] is True
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.ConflictError) as err:
            client.chat.completions.create(model="second", messages=MESSAGES, max_tokens=2)
        assert err.value.code == "model_pinned"
        client.chat.completions.create(model="smollm2", messages=MESSAGES, max_tokens=2)
    with pytest.raises(AssertionError):
        wait_for(
            lambda: daemon.call("status")["state"] == "idle", 3, "an unload that must not happen"
        )
    assert daemon.call("status")["model"] == MODEL_ID
    # An explicit administrative load still replaces a pinned model.
    assert daemon.call("load", model="second")["model"] == "second"


def test_first_token_timeout_before_streaming_is_408(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(
        smol_dir,
        args=["--load", "smollm2"],
        env={"RKLLMD_HTTP__FIRST_TOKEN_TIMEOUT_SECONDS": "0.001"},
    )
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(
                model="smollm2", messages=MESSAGES, max_tokens=50, stream=True
            )
        assert err.value.status_code == 408 and err.value.code == "request_timeout"
    wait_for(lambda: daemon.call("status")["state"] == "ready", 10, "slot freed")


def test_request_timeout_mid_stream_ends_with_error_event(start_daemon, smol_dir) -> None:  # type: ignore[no-untyped-def]
    daemon = start_daemon(
        smol_dir, args=["--load", "smollm2"], env={"RKLLMD_HTTP__REQUEST_TIMEOUT_SECONDS": "1.5"}
    )
    with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
        stream = long_chat_stream(client, 5000)
        received = 0
        with pytest.raises(openai.APIError) as err:
            for _ in stream:
                received += 1
        assert received > 1 and "time limit" in err.value.message
    wait_for(lambda: daemon.call("status")["counters"]["aborted"] == 1, 10, "generation aborted")
