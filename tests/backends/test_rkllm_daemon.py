"""Full daemon runs with the librkllmrt double: load, chat, KV reuse, tools, embeddings."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon
from tests.fixtures.build_double import write_model
from tests.helpers import DaemonProcess, RpcError


def msgs(*pairs: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"role": r, "content": c} for r, c in pairs]


def chat(daemon: DaemonProcess, messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = daemon.call("chat", messages=messages, **extra)
    return result


def runs_since(log: CallLog, mark: int) -> list[dict[str, Any]]:
    return [c for c in log.since(mark) if c["fn"] in ("rkllm_run", "rkllm_clear_kv_cache")]


# --- load --------------------------------------------------------------------------------


@pytest.mark.parametrize(("abi", "version"), [(13, "1.3.0"), (12, "1.2.3"), (12, "1.2.1")])
def test_load_reports_runtime_facts(
    npu_daemon: NpuDaemon, call_log: CallLog, abi: int, version: str
) -> None:
    daemon = npu_daemon(abi=abi, version=version)
    status = daemon.call("status")
    assert status["state"] == "ready" and status["format"] == "rkllm"
    assert status["runtime"]["version"] == version
    assert status["runtime"]["abi"] == ("1.3" if abi == 13 else "1.2")
    assert status["runtime"]["version_source"] == "library"
    props = daemon.call("show", model=MODEL_ID)["props"]
    assert props["backend"] == "rkllm" and props["backend_version"] == version
    assert props["npu_cores"] == 3 and props["max_context_limit"] == 4096
    assert props["n_ctx"] == 4096
    assert props["target_platform"] == "RK3588" and props["model_dtype"] == "W8A8"
    assert props["toolkit_version"] == "1.3.0"
    assert props["runtime"]["driver_version"] == "0.9.8"
    assert props["runtime"]["platform"] == "RK3588"
    assert any("rkllm-toolkit version" in line for line in props["init_log"])
    assert props["chat_template_family"] == "chatml"
    assert props["chat_template_source"] == "family"
    assert props["sampling"] == ("per-request" if abi == 13 else "init-time")
    if abi == 12:
        assert any("fixes sampling at load" in note for note in props["notes"])
    init = call_log.calls("rkllm_init")[-1]
    assert init["max_context_len"] == 4096 and init["n_keep"] == -1
    assert init["skip_special_token"] == 1 and init["is_async"] == 0
    template = call_log.calls("rkllm_set_chat_template")[-1]
    assert template["system_prompt"] == template["prompt_prefix"] == ""
    assert template["prompt_postfix"] == ""


def test_ctx_above_model_limit_fails_with_the_limit(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    with pytest.raises(RpcError) as err:
        daemon.call("load", model=MODEL_ID, ctx_size=8192)
    assert err.value.data["code"] == "load_failed"
    assert "4096" in err.value.error["message"] and err.value.data["limit"] == 4096
    # The file name does not state the limit, so only the runtime found out; the model
    # was then loaded again as it was (its own options), and status says what failed.
    assert err.value.data["restored"] == MODEL_ID
    status = daemon.call("status")
    assert status["state"] == "ready" and status["options"] == {}
    assert status["load_failure"]["model"] == MODEL_ID
    assert daemon.call("load", model=MODEL_ID, ctx_size=2048)["state"] == "ready"
    assert daemon.call("show", model=MODEL_ID)["props"]["n_ctx"] == 2048


def test_configured_ctx_is_clamped_to_a_smaller_model(
    npu_daemon: NpuDaemon, npu_models: Any
) -> None:
    write_model(npu_models, "Qwen2-small.rkllm", max_context_limit=1024)
    daemon = npu_daemon(load=False)
    daemon.call("load", model="Qwen2-small")
    props = daemon.call("show", model="Qwen2-small")["props"]
    assert props["n_ctx"] == 1024 and props["max_context_limit"] == 1024


def test_npu_cores_request_is_reported_not_ignored(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    daemon.call("load", model=MODEL_ID, npu_cores=2)
    props = daemon.call("show", model=MODEL_ID)["props"]
    assert props["npu_cores"] == 3
    assert any("npu_cores=2" in note and "uses 3" in note for note in props["notes"])


def test_threads_map_to_enabled_cpus(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env={"RKLLMD_RKLLM__THREADS": "2"})
    assert call_log.calls("rkllm_init")[-1]["enabled_cpus_num"] == 2
    assert daemon.call("show", model=MODEL_ID)["props"]["threads"] == 2


# --- chat --------------------------------------------------------------------------------


def test_chat_non_stream_renders_the_whole_history(
    npu_daemon: NpuDaemon, call_log: CallLog
) -> None:
    daemon = npu_daemon()
    history = msgs(
        ("system", "Be brief."),
        ("user", "first"),
        ("assistant", "an answer"),
        ("user", "again [[say:Hello, world!]]"),
    )
    result = chat(daemon, history, temperature=0.3, top_k=7, max_tokens=50)
    assert result["message"] == {"role": "assistant", "content": "Hello, world!"}
    assert result["finish_reason"] == "stop"
    run = call_log.runs()[-1]
    assert run["role"] == "user" and run["keep_history"] == 1
    assert run["input"] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nfirst<|im_end|>\n"
        "<|im_start|>assistant\nan answer<|im_end|>\n"
        "<|im_start|>user\nagain [[say:Hello, world!]]<|im_end|>\n<|im_start|>assistant\n"
    )
    assert run["sampling"]["source"] == "run"
    assert run["sampling"]["top_k"] == 7 and run["sampling"]["temperature"] == 0.3
    assert run["max_new_tokens"] == 50
    usage = result["usage"]
    assert usage["prompt_tokens"] == math.ceil(len(run["input"].encode()) / 4)
    assert usage["completion_tokens"] == result["perf"]["generate_tokens"] > 0
    assert result["perf"]["prefill_tokens"] == usage["prompt_tokens"]


def test_chat_stream_joins_split_multibyte_characters(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    client = daemon.client()
    text = "日本語 and émojis 🙂 ok"
    result = client.call("chat", messages=msgs(("user", f"[[say:{text}]]")), stream=True)
    streamed = "".join(n["params"]["text"] for n in client.notifications if n["method"] == "token")
    assert streamed == result["message"]["content"] == text
    assert "\ufffd" not in streamed


def test_waiting_convention_with_only_the_rest_in_normal(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(env={"RKLLM_DOUBLE_WAITING": "rest"})
    text = "naïve 日本 🙂"
    assert chat(daemon, msgs(("user", f"[[say:{text}]]")))["message"]["content"] == text


def test_sampling_on_runtime_12_is_init_time(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(abi=12, version="1.2.3", env={"RKLLM_DOUBLE_TOKEN_DELAY_US": "20000"})
    # A reply far longer than the budget (10 s of tokens): the run must still be going
    # when the backend's abort comes, however late a loaded machine delivers it; with a
    # short reply the run could end on its own first and no rkllm_abort be made.
    result = chat(daemon, msgs(("user", "[[repeat:500]]")), temperature=0.1, max_tokens=5)
    run = call_log.runs()[-1]
    assert run["sampling"]["source"] == "init" and run["sampling"]["temperature"] == 0.8
    # max_tokens still holds: the backend stops the run itself.
    assert result["finish_reason"] == "length"
    assert result["message"]["content"] == " tok" * 5
    assert call_log.calls("rkllm_abort")


def test_max_tokens_and_stop_strings(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    capped = chat(daemon, msgs(("user", "[[repeat:40]]")), max_tokens=3)
    assert capped["finish_reason"] == "length" and capped["message"]["content"] == " tok" * 3
    stopped = chat(daemon, msgs(("user", "[[say:alpha beta STOP gamma]]")), stop=["STOP"])
    assert stopped["finish_reason"] == "stop"
    assert stopped["message"]["content"] == "alpha beta "


# --- KV cache reuse ----------------------------------------------------------------------


def _two_turns(daemon: DaemonProcess) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    first = msgs(("system", "You are terse."), ("user", "Hello there"))
    reply = chat(daemon, first)["message"]["content"]
    second = [*first, {"role": "assistant", "content": reply}, *msgs(("user", "And now?"))]
    return second, chat(daemon, second)


@pytest.mark.parametrize("kv_last", ["fed", "dropped"])
def test_next_turn_prefills_only_the_new_turn(
    npu_daemon: NpuDaemon, call_log: CallLog, kv_last: str
) -> None:
    daemon = npu_daemon(env={"RKLLM_DOUBLE_KV_LAST": kv_last})
    mark = call_log.mark()
    conversation, reused = _two_turns(daemon)
    calls = runs_since(call_log, mark)
    assert [c["fn"] for c in calls] == ["rkllm_clear_kv_cache", "rkllm_run", "rkllm_run"]
    second = calls[-1]
    assert second["keep_history"] == 1 and second["kv_tokens_before"] > 0
    assert second["input"].startswith("" if kv_last == "dropped" else "<|im_end|>\n")
    assert second["input"].endswith("<|im_start|>user\nAnd now?<|im_end|>\n<|im_start|>assistant\n")
    assert "You are terse." not in second["input"]
    assert reused["usage"]["cached_tokens"] == second["kv_tokens_before"]
    assert reused["usage"]["prompt_tokens"] > reused["perf"]["prefill_tokens"]

    # The same conversation prefilled from scratch gives the same reply: the reply
    # of the double depends on everything in its KV cache, so reuse was exact.
    chat(daemon, msgs(("user", "something else entirely")))
    mark = call_log.mark()
    cold = chat(daemon, conversation)
    calls = runs_since(call_log, mark)
    assert [c["fn"] for c in calls] == ["rkllm_clear_kv_cache", "rkllm_run"]
    assert cold["message"]["content"] == reused["message"]["content"]
    assert cold["usage"]["cached_tokens"] == 0


def test_third_turn_keeps_reusing(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon()
    conversation, second = _two_turns(daemon)
    third = [
        *conversation,
        {"role": "assistant", "content": second["message"]["content"]},
        *msgs(("user", "Third")),
    ]
    mark = call_log.mark()
    result = chat(daemon, third)
    calls = runs_since(call_log, mark)
    assert [c["fn"] for c in calls] == ["rkllm_run"]
    assert result["usage"]["cached_tokens"] > second["usage"]["cached_tokens"]


@pytest.mark.parametrize(
    "change",
    ["edited_user", "edited_assistant", "system_prompt", "other_conversation", "regenerate"],
)
def test_anything_but_an_extension_clears_the_cache(
    npu_daemon: NpuDaemon, call_log: CallLog, change: str
) -> None:
    daemon = npu_daemon()
    first = msgs(("system", "You are terse."), ("user", "Hello there"))
    reply = chat(daemon, first)["message"]["content"]
    follow = [*first, {"role": "assistant", "content": reply}, *msgs(("user", "And now?"))]
    if change == "edited_user":
        follow[1]["content"] = "Hello here"
    elif change == "edited_assistant":
        follow[2]["content"] = "Edited: " + reply
    elif change == "system_prompt":
        follow[0]["content"] = "You are verbose."
    elif change == "other_conversation":
        follow = msgs(("user", "Unrelated question"))
    else:
        follow = first  # the same request again
    mark = call_log.mark()
    result = chat(daemon, follow)
    calls = runs_since(call_log, mark)
    assert [c["fn"] for c in calls] == ["rkllm_clear_kv_cache", "rkllm_run"]
    assert calls[1]["kv_tokens_before"] == 0 and calls[1]["input"].startswith("<|im_start|>")
    assert result["usage"]["cached_tokens"] == 0


@pytest.mark.parametrize("how", ["stop_string", "max_tokens_on_12", "error"])
def test_runs_that_did_not_end_normally_are_not_reused(
    npu_daemon: NpuDaemon, call_log: CallLog, how: str
) -> None:
    env = {"RKLLM_DOUBLE_FAIL": "error", "RKLLM_DOUBLE_FAIL_AFTER": "3"} if how == "error" else {}
    daemon = npu_daemon(
        abi=12 if how == "max_tokens_on_12" else 13,
        version="1.2.3" if how == "max_tokens_on_12" else "1.3.0",
        env=env,
    )
    first = msgs(("user", "[[say:one two three four five six seven]]"))
    extra: dict[str, Any] = {"stop": ["four"]} if how == "stop_string" else {}
    if how == "max_tokens_on_12":
        extra = {"max_tokens": 2}
    if how == "error":
        with pytest.raises(RpcError) as err:  # the injected ERROR must really happen
            chat(daemon, first, **extra)
        assert err.value.data["code"] == "generation_failed"
        reply = ""
    else:
        reply = chat(daemon, first, **extra)["message"]["content"]
    follow = [*first, {"role": "assistant", "content": reply}, *msgs(("user", "next"))]
    mark = call_log.mark()
    with contextlib.suppress(RpcError):  # the double may fail this run too; only its start matters
        chat(daemon, follow)
    assert [c["fn"] for c in runs_since(call_log, mark)][:1] == ["rkllm_clear_kv_cache"]


def test_history_that_no_longer_fits_is_prefilled_from_scratch(
    npu_daemon: NpuDaemon, npu_models: Any, call_log: CallLog
) -> None:
    write_model(npu_models, "Qwen2-tiny.rkllm", max_context_limit=256)
    daemon = npu_daemon(load=False)
    daemon.call("load", model="Qwen2-tiny")
    first = msgs(("user", "x" * 600))
    reply = chat(daemon, first)["message"]["content"]
    follow = [*first, {"role": "assistant", "content": reply}, *msgs(("user", "y" * 600))]
    mark = call_log.mark()
    with pytest.raises(RpcError) as err:
        chat(daemon, follow)
    assert err.value.data["code"] == "context_length_exceeded"
    assert [c["fn"] for c in runs_since(call_log, mark)] == ["rkllm_clear_kv_cache", "rkllm_run"]
    assert daemon.call("status")["state"] == "ready"


# --- tools and reasoning -----------------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_tool_calls_round_trip(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon()
    call = '<tool_call>\\n{"name": "get_weather", "arguments": {"city": "Paris"}}\\n</tool_call>'
    first = msgs(("system", "Use tools."), ("user", f"Weather? [[say:{call}]]"))
    result = chat(daemon, first, tools=[WEATHER])
    run = call_log.runs()[-1]
    assert "# Tools" in run["input"] and '"name": "get_weather"' in run["input"]
    assert run["input"].startswith("<|im_start|>system\nUse tools.\n\n# Tools")
    assert result["finish_reason"] == "tool_calls"
    assert result["message"]["content"] == ""
    (tool_call,) = result["message"]["tool_calls"]
    assert tool_call["type"] == "function" and tool_call["id"].startswith("call_")
    assert tool_call["function"]["name"] == "get_weather"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}

    follow = [
        *first,
        {"role": "assistant", "content": "", "tool_calls": [tool_call]},
        {"role": "tool", "content": '{"temp": 21} [[say:It is 21.]]', "tool_call_id": "c1"},
    ]
    answer = chat(daemon, follow, tools=[WEATHER])
    assert answer["finish_reason"] == "stop" and "tool_calls" not in answer["message"]
    # The call the model wrote is exactly how the template renders it in history,
    # so the tool result continues the cache.
    run = call_log.runs()[-1]
    assert run["input"] == (
        "<|im_end|>\n<|im_start|>user\n<tool_response>\n"
        '{"temp": 21} [[say:It is 21.]]\n</tool_response><|im_end|>\n<|im_start|>assistant\n'
    )
    assert answer["message"]["content"] == "It is 21."
    assert answer["usage"]["cached_tokens"] > 0
    # From scratch, the history renders the call the same way.
    chat(daemon, msgs(("user", "unrelated")))
    cold = chat(daemon, follow, tools=[WEATHER])
    assert cold["message"]["content"] == answer["message"]["content"]
    assert (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        in (call_log.runs()[-1]["input"])
    )


def test_reasoning_is_split(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon()
    client = daemon.client()
    say = "[[say:<think>\\nLet me think.\\n</think>\\n\\nThe answer is 4.]]"
    result = client.call("chat", messages=msgs(("user", say)), stream=True)
    assert result["message"]["content"] == "The answer is 4."
    assert result["message"]["reasoning_content"] == "Let me think."
    tokens = [n["params"] for n in client.notifications if n["method"] == "token"]
    assert "".join(t.get("reasoning", "") for t in tokens) == "Let me think."
    assert "".join(t.get("text", "") for t in tokens) == "The answer is 4."


def test_qwen3_thinking_switch_and_r1_open_reasoning(
    npu_daemon: NpuDaemon, npu_models: Any, call_log: CallLog
) -> None:
    write_model(npu_models, "Qwen3-0.6B-w8a8.rkllm")
    write_model(npu_models, "DeepSeek-R1-Distill-Qwen-1.5B_W8A8_RK3588.rkllm")
    daemon = npu_daemon(load=False)
    daemon.call("load", model="Qwen3-0.6B-w8a8")
    chat(daemon, msgs(("user", "hi")), enable_thinking=False)
    run = call_log.runs()[-1]
    assert run["input"].endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    daemon.call("load", model="DeepSeek-R1")
    assert daemon.call("show", model="DeepSeek-R1")["props"]["reasoning_starts_open"] is True
    result = chat(daemon, msgs(("user", "[[say:pondering</think>\\n\\nDone.]]")))
    assert result["message"]["content"] == "Done."
    assert result["message"]["reasoning_content"] == "pondering"
    assert call_log.runs()[-1]["input"].endswith("<think>\n")


def test_chat_template_override_by_family(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon()
    daemon.call("load", model=MODEL_ID, chat_template="llama3")
    props = daemon.call("show", model=MODEL_ID)["props"]
    assert props["chat_template_source"] == "override"
    chat(daemon, msgs(("user", "hi")))
    assert call_log.runs()[-1]["input"] == (
        "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


# --- embeddings ----------------------------------------------------------------------------


def test_embeddings_from_the_last_hidden_layer(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon()
    first = daemon.call("embed", input=["hello world", "something else", "hello world"])
    vectors = first["data"]
    assert len(vectors) == 3 and all(len(v) == 64 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-5 for v in vectors)
    assert vectors[0] == vectors[2] and vectors[0] != vectors[1]
    assert first["usage"]["prompt_tokens"] == 3 + 4 + 3
    hidden = call_log.runs(mode=1)
    assert [r["input"] for r in hidden] == ["hello world", "something else", "hello world"]
    assert all(r["keep_history"] == 0 for r in hidden)
    # A chat after embeddings starts from a clean cache.
    mark = call_log.mark()
    chat(daemon, msgs(("user", "hi")))
    assert runs_since(call_log, mark)[0]["fn"] == "rkllm_clear_kv_cache"


# --- doctor ----------------------------------------------------------------------------------


def test_doctor_shows_the_runtime_of_the_resident_model(npu_daemon: NpuDaemon) -> None:
    import io

    from rkllmctl.cli import run

    daemon = npu_daemon()
    out = io.StringIO()
    run(
        ["--socket", str(daemon.socket), "--json", "doctor"],
        env={},
        stdin=io.StringIO(""),
        stdout=out,
        stderr=io.StringIO(),
    )
    checks = {c["name"]: c for c in json.loads(out.getvalue())["checks"]}
    assert checks["daemon"]["status"] == "ok"
    assert "RKLLM runtime 1.3.0 (driver 0.9.8)" in checks["daemon"]["detail"]
    assert checks["memory"]["status"] in ("ok", "warn")


def test_length_capped_turn_on_13_is_reused(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    """Runtime 1.3 ends the run at max_new_tokens itself: the cache stays valid."""
    daemon = npu_daemon()
    first = msgs(("user", "[[say:one two three four five six seven]]"))
    capped = chat(daemon, first, max_tokens=2)
    assert capped["finish_reason"] == "length" and capped["usage"]["completion_tokens"] == 2
    follow = [
        *first,
        {"role": "assistant", "content": capped["message"]["content"]},
        *msgs(("user", "next")),
    ]
    mark = call_log.mark()
    result = chat(daemon, follow)
    calls = runs_since(call_log, mark)
    assert [c["fn"] for c in calls] == ["rkllm_run"]  # no clear_kv_cache
    assert calls[0]["kv_tokens_before"] > 0 and result["usage"]["cached_tokens"] > 0
    assert not calls[0]["input"].startswith("<|im_start|>system")
