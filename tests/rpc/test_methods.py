"""Control methods against a real daemon and the real SmolLM2 model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import MODEL_ID, RpcError, chat_params, place_model, wait_for


@pytest.mark.real_model
def test_status_list_show_with_loaded_model(daemon) -> None:
    status = daemon.call("status")
    assert status["state"] == "ready"
    assert status["model"] == MODEL_ID
    assert status["format"] == "gguf"
    assert isinstance(status["worker_pid"], int) and status["worker_pid"] != daemon.proc.pid

    models = daemon.call("list")["models"]
    assert [(m["id"], m["format"], m["loaded"]) for m in models] == [(MODEL_ID, "gguf", True)]
    assert models[0]["size_bytes"] == os.path.getsize(daemon.models_dir / f"{MODEL_ID}.gguf")

    shown = daemon.call("show", model="smollm2")
    assert shown["id"] == MODEL_ID and shown["loaded"] is True
    assert shown["props"]["architecture"] == "llama"
    assert "<|im_start|>" in shown["props"]["chat_template"]
    assert shown["props"]["chat_template_source"] == "model"


def test_unload_then_load_by_prefix(daemon) -> None:
    old_pid = daemon.call("status")["worker_pid"]
    after = daemon.call("unload")
    assert after["state"] == "idle" and after["model"] is None and after["worker_pid"] is None
    assert after["unloaded"] == MODEL_ID and daemon.call("unload")["unloaded"] is None
    wait_for(lambda: not _alive(old_pid), 10, "worker exit after unload")
    assert daemon.call("list")["models"][0]["loaded"] is False

    loaded = daemon.call("load", model="SMOLLM2")
    assert loaded["state"] == "ready" and loaded["model"] == MODEL_ID
    assert loaded["worker_pid"] != old_pid


def test_load_progress_notifications(daemon) -> None:
    daemon.call("unload")
    client = daemon.client()
    try:
        result = client.call("load", model="smollm2", progress=True)
    finally:
        client.close()
    stages = [n["params"]["stage"] for n in client.notifications if n["method"] == "progress"]
    assert stages[0] == "starting" and stages[-1] == "ready"
    assert result["state"] == "ready"


def test_switching_models_replaces_the_worker(daemon) -> None:
    place_model(daemon.models_dir, "other-copy.gguf")
    daemon.call("rescan")
    first = daemon.call("status")["worker_pid"]
    switched = daemon.call("load", model="other-copy")
    assert switched["model"] == "other-copy" and switched["worker_pid"] != first
    wait_for(lambda: not _alive(first), 10, "old worker exit")
    loaded = {m["id"]: m["loaded"] for m in daemon.call("list")["models"]}
    assert loaded == {MODEL_ID: False, "other-copy": True}


def test_load_with_options_is_reported(daemon) -> None:
    status = daemon.call("load", model="smollm2", ctx_size=1024, threads=1)
    assert status["options"] == {"ctx_size": 1024, "threads": 1}
    assert daemon.call("show", model="smollm2")["props"]["n_ctx"] == 1024


@pytest.mark.real_model
def test_ctx_size_above_model_limit_fails_with_limit(daemon) -> None:
    worker = daemon.call("status")["worker_pid"]
    with pytest.raises(RpcError) as err:
        daemon.call("load", model="smollm2", ctx_size=65536)
    assert err.value.data == {"code": "load_failed", "limit": 8192}  # from the GGUF header
    assert "8192" in err.value.error["message"]
    status = daemon.call("status")  # refused before anything was unloaded
    assert status["state"] == "ready" and status["worker_pid"] == worker
    # An unknown option is refused before anything happens, too.
    with pytest.raises(RpcError) as err:
        daemon.call("load", model="smollm2", ctx_size=1024, n_gpu_layers=99)
    assert err.value.data["code"] == "invalid_params"
    assert daemon.call("status")["worker_pid"] == worker


def test_chat_streams_tokens_and_reports_usage(daemon) -> None:
    client = daemon.client()
    try:
        result = client.call("chat", **chat_params(max_tokens=12, stream=True, seed=7))
    finally:
        client.close()
    tokens = [n["params"]["text"] for n in client.notifications if n["method"] == "token"]
    assert tokens, "no token notifications before the final answer"
    assert "".join(tokens) == result["message"]["content"]
    usage = result["usage"]
    assert usage["completion_tokens"] == 12 and result["finish_reason"] == "length"
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert result["model"] == MODEL_ID


def test_same_seed_same_text(daemon) -> None:
    params = chat_params("Name a colour.", max_tokens=16, temperature=0.9, seed=1234)
    daemon.call("chat", **params)  # from here on each call starts from the same KV cache state
    first = daemon.call("chat", **params)["message"]["content"]
    assert daemon.call("chat", **params)["message"]["content"] == first
    others = {
        daemon.call("chat", **{**params, "seed": seed})["message"]["content"] for seed in (1, 2, 3)
    }
    assert others != {first}


def test_stop_sequence_cuts_output(daemon) -> None:
    daemon.call("chat", **chat_params("Count from one to ten.", max_tokens=40))
    free = daemon.call("chat", **chat_params("Count from one to ten.", max_tokens=40))
    text = free["message"]["content"]
    assert len(text) > 4
    stop = text[2:4]
    cut = daemon.call("chat", **chat_params("Count from one to ten.", max_tokens=40, stop=[stop]))
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["content"] == text[: text.index(stop)]


@pytest.mark.real_model
def test_multi_turn_reuses_the_evaluated_prefix(daemon) -> None:
    first_turn = [{"role": "user", "content": "Tell me about the sea."}]
    first = daemon.call("chat", messages=first_turn, max_tokens=16, temperature=0.0)
    second_turn = [*first_turn, first["message"], {"role": "user", "content": "And the sky?"}]
    second = daemon.call("chat", messages=second_turn, max_tokens=8, temperature=0.0)
    # Everything up to the end of the first prompt was already in the KV cache.
    assert second["usage"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1
    unrelated = daemon.call("chat", **chat_params("Completely different question?", max_tokens=4))
    # Only the shared system-prompt head can be reused, not the old conversation.
    assert 0 < unrelated["usage"]["cached_tokens"] < first["usage"]["prompt_tokens"] - 1


def test_chat_names_a_cold_model_and_loads_it(daemon) -> None:
    daemon.call("unload")
    result = daemon.call("chat", **chat_params(model="smollm2", max_tokens=3))
    assert result["model"] == MODEL_ID
    assert daemon.call("status")["state"] == "ready"


def test_chat_without_model_when_idle_is_no_model_loaded(daemon) -> None:
    daemon.call("unload")
    with pytest.raises(RpcError) as err:
        daemon.call("chat", **chat_params(max_tokens=3))
    assert err.value.code == -32003 and err.value.data["code"] == "no_model_loaded"


def test_prompt_longer_than_context_is_rejected(daemon) -> None:
    daemon.call("load", model="smollm2", ctx_size=256)
    with pytest.raises(RpcError) as err:
        daemon.call("chat", **chat_params("word " * 400, max_tokens=4))
    assert err.value.code == -32602 and err.value.data["code"] == "context_length_exceeded"
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] == 2


def test_remove_refuses_the_loaded_model_without_force(daemon) -> None:
    # pull and remove in depth: tests/store/
    with pytest.raises(RpcError) as err:
        daemon.call("remove", model="smollm2")
    assert err.value.code == -32013 and err.value.data["code"] == "model_in_use"
    assert (daemon.models_dir / f"{MODEL_ID}.gguf").exists()


@pytest.mark.real_model
def test_corrupt_and_truncated_gguf_fail_cleanly(daemon) -> None:
    (daemon.models_dir / "garbage.gguf").write_bytes(os.urandom(4096))
    real = (daemon.models_dir / f"{MODEL_ID}.gguf").read_bytes()
    (daemon.models_dir / "truncated.gguf").write_bytes(real[: len(real) // 3])
    for path in daemon.models_dir.glob("*.gguf"):
        os.utime(path, (1, 1))
    daemon.call("rescan")
    for name in ("garbage", "truncated"):
        with pytest.raises(RpcError) as err:
            daemon.call("load", model=name)
        assert err.value.code == -32005 and err.value.data["code"] == "load_failed"
        assert err.value.data["restored"] == MODEL_ID
        message = err.value.error["message"]
        assert str(daemon.models_dir) not in message and "Traceback" not in message
        # The model loaded before serves again; status says which load failed and why.
        status = daemon.call("status")
        assert status["state"] == "ready" and status["model"] == MODEL_ID
        failure = status["load_failure"]
        assert failure["model"] == name and failure["reason"] == message
        assert failure["restored"] == MODEL_ID and failure["code"] == "load_failed"
    daemon.call("unload")
    with pytest.raises(RpcError):
        daemon.call("load", model="garbage")
    status = daemon.call("status")  # nothing to bring back
    assert status["state"] == "failed" and status["model"] == "garbage" and status["reason"]
    assert daemon.call("load", model="smollm2")["state"] == "ready"
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] == 2


def test_unknown_and_ambiguous_names(daemon) -> None:
    place_model(daemon.models_dir, "smollm2-copy.gguf")
    daemon.call("rescan")
    with pytest.raises(RpcError) as err:
        daemon.call("load", model="no-such-model")
    assert err.value.code == -32001 and err.value.data["code"] == "model_not_found"
    assert set(err.value.data["available"]) == {MODEL_ID, "smollm2-copy"}
    with pytest.raises(RpcError) as err:
        daemon.call("show", model="smollm2")
    assert err.value.code == -32002 and err.value.data["code"] == "ambiguous_model"
    assert set(err.value.data["candidates"]) == {MODEL_ID, "smollm2-copy"}


@pytest.mark.parametrize(
    "name", ["../outside", "/etc/passwd", "a/../../b", "x\x00y", "..", "line\nbreak"]
)
def test_path_like_names_are_invalid_params(daemon, name: str) -> None:
    for method in ("load", "show"):
        with pytest.raises(RpcError) as err:
            daemon.call(method, model=name)
        assert err.value.code == -32602 and err.value.data["code"] == "invalid_model_name"
    assert daemon.call("status")["state"] == "ready"


def test_symlink_out_of_models_dir_is_refused_and_not_read(daemon, tmp_path: Path) -> None:
    outside = tmp_path / "secret.gguf"
    shutil.copyfile(daemon.models_dir / f"{MODEL_ID}.gguf", outside)
    before = os.stat(outside).st_atime_ns
    (daemon.models_dir / "evil.gguf").symlink_to(outside)
    daemon.call("rescan")
    assert "evil" not in [m["id"] for m in daemon.call("list")["models"]]
    with pytest.raises(RpcError) as err:
        daemon.call("load", model="evil")
    assert err.value.code == -32602 and err.value.data["code"] == "invalid_model_name"
    assert str(outside) not in err.value.error["message"]
    assert os.stat(outside).st_atime_ns == before
    assert daemon.call("status")["model"] == MODEL_ID


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); look at its state.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_embeddings_are_normalised_and_meaningful(daemon) -> None:
    result = daemon.call(
        "embed",
        input=[
            "The cat sat on the mat.",
            "A cat is sitting on a mat.",
            "Quarterly tax filing deadlines",
        ],
    )
    vectors = result["data"]
    assert len(vectors) == 3 and len({len(v) for v in vectors}) == 1
    for vector in vectors:
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-3

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert result["usage"]["prompt_tokens"] > 0 and result["model"] == MODEL_ID
    # The chat context is untouched by embedding work.
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize("text", ["", ["fine", ""]])
def test_empty_embedding_input_is_invalid_params(daemon, text: str | list[str]) -> None:
    with pytest.raises(RpcError) as err:
        daemon.call("embed", input=text)
    assert err.value.code == -32602 and err.value.data["code"] == "invalid_params"
    assert daemon.call("embed", input="fine")["data"]


def test_ignore_eos_generates_to_the_budget(daemon) -> None:
    result = daemon.call("chat", **chat_params("Say OK.", max_tokens=300, ignore_eos=True))
    assert result["usage"]["completion_tokens"] == 300 and result["finish_reason"] == "length"
    natural = daemon.call("chat", **chat_params("Say OK.", max_tokens=300))
    assert natural["usage"]["completion_tokens"] < 300 and natural["finish_reason"] == "stop"
