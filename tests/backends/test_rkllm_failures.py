"""Every way the runtime can fail: the daemon stays up, says what happened, loads again.

Failure modes are picked by environment variable for the model file whose path
contains "broken"; the other model in the directory always works.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from tests.backends.conftest import MODEL_ID, CallLog, NpuDaemon
from tests.fixtures.build_double import double_library, write_model
from tests.helpers import DaemonProcess, RpcError, wait_for

BROKEN = "Qwen2.5-broken"


def fail_env(mode: str, **extra: str) -> dict[str, str]:
    return {"RKLLM_DOUBLE_FAIL": mode, "RKLLM_DOUBLE_FAIL_MODEL": "broken", **extra}


@pytest.fixture
def broken(npu_models: Path) -> str:
    write_model(npu_models, f"{BROKEN}.rkllm")
    return BROKEN


def hello(daemon: DaemonProcess, text: str = "[[say:all good]]") -> dict[str, Any]:
    result: dict[str, Any] = daemon.call("chat", messages=[{"role": "user", "content": text}])
    return result


def recovers(daemon: DaemonProcess) -> None:
    """The daemon answers, loads the healthy model and generates with it."""
    assert daemon.proc.poll() is None
    assert daemon.call("load", model=MODEL_ID)["state"] == "ready"
    assert hello(daemon)["message"]["content"] == "all good"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_init_failure(npu_daemon: NpuDaemon, broken: str) -> None:
    daemon = npu_daemon(env=fail_env("init"), load=False)
    with pytest.raises(RpcError) as err:
        daemon.call("load", model=broken)
    assert err.value.data["code"] == "load_failed"
    assert "failed to malloc npu memory" in err.value.error["message"]
    assert "/" not in err.value.error["message"]  # no paths in client messages
    status = daemon.call("status")
    assert status["state"] == "failed" and status["model"] == broken
    recovers(daemon)


def test_not_a_model_file(npu_daemon: NpuDaemon, npu_models: Path) -> None:
    (npu_models / "garbage.rkllm").write_bytes(b"\x00not a model")
    os.utime(npu_models / "garbage.rkllm", (time.time() - 60,) * 2)
    daemon = npu_daemon(load=False)
    with pytest.raises(RpcError) as err:
        daemon.call("load", model="garbage")
    assert err.value.data["code"] == "load_failed"
    assert "invalid magic" in err.value.error["message"]
    recovers(daemon)


def test_error_mid_run(npu_daemon: NpuDaemon, broken: str, call_log: CallLog) -> None:
    daemon = npu_daemon(env=fail_env("error", RKLLM_DOUBLE_FAIL_AFTER="2"), load=False)
    daemon.call("load", model=broken)
    pid = daemon.call("status")["worker_pid"]
    client = daemon.client()
    with pytest.raises(RpcError) as err:
        client.call("chat", messages=[{"role": "user", "content": "[[repeat:9]]"}], stream=True)
    assert err.value.data["code"] == "generation_failed"
    assert "NPU runtime reported an error" in err.value.error["message"]
    assert len([n for n in client.notifications if n["method"] == "token"]) >= 1
    status = daemon.call("status")
    assert status["state"] == "ready" and status["worker_pid"] == pid
    assert status["counters"]["failed"] == 1
    recovers(daemon)


def test_segfault_mid_run(npu_daemon: NpuDaemon, broken: str) -> None:
    daemon = npu_daemon(env=fail_env("segv"), load=False)
    daemon.call("load", model=broken)
    pid = daemon.call("status")["worker_pid"]
    with pytest.raises(RpcError) as err:
        hello(daemon, "[[repeat:9]]")
    assert err.value.data["code"] == "backend_crashed"
    assert "SIGSEGV" in err.value.error["message"]
    status = daemon.call("status")
    assert status["state"] == "failed" and "SIGSEGV" in status["reason"]
    wait_for(lambda: not alive(pid), 30, "the crashed worker to be gone")
    recovers(daemon)


def test_hang_is_ended_by_the_stuck_watchdog(npu_daemon: NpuDaemon, broken: str) -> None:
    # 3 s of silence: a loaded machine's healthy first token (in recovers()) comes sooner.
    env = fail_env("hang", RKLLM_DOUBLE_FAIL_AFTER="1", RKLLMD_WORKER__STUCK_SECONDS="3")
    daemon = npu_daemon(env=env, load=False)
    daemon.call("load", model=broken)
    with pytest.raises(RpcError) as err:
        hello(daemon, "[[repeat:9]]")
    assert err.value.data["code"] == "backend_crashed"
    assert "stopped responding" in err.value.error["message"]
    recovers(daemon)


def test_idle_time_before_a_generation_is_not_silence(npu_daemon: NpuDaemon) -> None:
    # The stuck check runs every 0.2 s (WATCHDOG_USEC) and allows 2 s of silence. The
    # model then sits idle for longer than that, and the next request spends ~1 s in
    # prefill without a token: that is work, not a stuck worker.
    env = {
        "WATCHDOG_USEC": "400000",
        "RKLLMD_WORKER__STUCK_SECONDS": "2",
        "RKLLM_DOUBLE_PREFILL_US": "4000",
    }
    daemon = npu_daemon(env=env)
    pid = daemon.call("status")["worker_pid"]
    time.sleep(3)  # idle, longer than stuck_seconds
    reply = hello(daemon, "word " * 200 + "[[say:all good]]")
    assert reply["message"]["content"] == "all good"
    assert daemon.call("status")["worker_pid"] == pid
    assert "stopped responding" not in daemon.log()


# --- client disconnects ----------------------------------------------------------------


def test_rpc_disconnect_aborts_the_run(npu_daemon: NpuDaemon, call_log: CallLog) -> None:
    daemon = npu_daemon(env={"RKLLM_DOUBLE_TOKEN_DELAY_US": "20000"})
    pid = daemon.call("status")["worker_pid"]
    client = daemon.client()
    client.start("chat", messages=[{"role": "user", "content": "[[repeat:500]]"}], stream=True)
    for _ in range(3):
        assert client.read_message()["method"] == "token"
    client.close()
    wait_for(lambda: call_log.calls("rkllm_abort"), 30, "rkllm_abort")
    wait_for(lambda: daemon.call("status")["counters"]["aborted"] == 1, 30, "aborted count")
    status = daemon.call("status")
    assert status["state"] == "ready" and status["worker_pid"] == pid
    run = call_log.runs()[-1]
    assert run["input"].endswith("[[repeat:500]]<|im_end|>\n<|im_start|>assistant\n")
    # The aborted reply is not trusted as cache content.
    mark = call_log.mark()
    assert hello(daemon)["message"]["content"] == "all good"
    assert call_log.since(mark)[0]["fn"] == "rkllm_clear_kv_cache"


def _http_stream_then_hang_up(daemon: DaemonProcess, model: str, call_log: CallLog) -> None:
    """Stream a chat over HTTP and hang up once the runtime has begun the run.

    Hanging up after a fixed time could come before the run started (a loaded machine),
    and then there is no run to abort. The double logs a run after resetting its abort
    flag, so an abort sent once the run is in the log is certain to reach it.
    """
    marker = f"hang-up-{time.monotonic_ns()}"
    body = json.dumps(
        {
            "model": model,
            "stream": True,
            "messages": [{"role": "user", "content": f"{marker} [[repeat:50]]"}],
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", daemon.http_port), timeout=10) as conn:
        conn.sendall(head + body)
        wait_for(
            lambda: any(marker in (r.get("input") or "") for r in call_log.runs()),
            30,
            "the run to start",
        )


def test_hang_until_abort_on_http_disconnect(
    npu_daemon: NpuDaemon, broken: str, call_log: CallLog
) -> None:
    daemon = npu_daemon(env=fail_env("hang", RKLLM_DOUBLE_FAIL_AFTER="0"), load=False)
    daemon.call("load", model=broken)
    pid = daemon.call("status")["worker_pid"]
    _http_stream_then_hang_up(daemon, broken, call_log)
    wait_for(lambda: call_log.calls("rkllm_abort"), 30, "rkllm_abort")
    wait_for(lambda: daemon.call("status")["state"] == "ready", 30, "ready again")
    assert daemon.call("status")["worker_pid"] == pid  # stopped by abort, not killed
    recovers(daemon)


def test_abort_ignored_kills_the_worker(
    npu_daemon: NpuDaemon, broken: str, call_log: CallLog
) -> None:
    # The kill comes this long after the daemon sent the abort; the worker must have
    # called rkllm_abort by then (checked below), which a loaded machine may delay:
    # 3 s, as in tests/reliability/test_native_faults.py::test_abort_ignored_in_a_loop.
    env = fail_env(
        "ignore_abort", RKLLM_DOUBLE_FAIL_AFTER="0", RKLLMD_WORKER__ABORT_GRACE_SECONDS="3"
    )
    daemon = npu_daemon(env=env, load=False)
    daemon.call("load", model=broken)
    pid = daemon.call("status")["worker_pid"]
    _http_stream_then_hang_up(daemon, broken, call_log)
    wait_for(lambda: not alive(pid), 30, "the stuck worker to be killed")
    assert len(call_log.calls("rkllm_abort")) == 1  # asked to stop, ignored it, killed
    # Killed is not yet known: the daemon reads the exit from the worker's pipe.
    wait_for(lambda: daemon.call("status")["state"] == "failed", 30, "the failure to show")
    assert "did not stop after an abort" in daemon.call("status")["reason"]
    recovers(daemon)


# --- runtime versions ---------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1.1.4", "1.0.1", "1.2.0", "1.2.1b1", "2.0.0"])
def test_unsupported_runtime_is_refused(npu_daemon: NpuDaemon, version: str) -> None:
    daemon = npu_daemon(version=version, load=False)
    with pytest.raises(RpcError) as err:
        daemon.call("load", model=MODEL_ID)
    message = err.value.error["message"]
    assert err.value.data["code"] == "load_failed"
    assert version in message and "1.2.1, 1.2.2, 1.2.3 and 1.3.x" in message
    assert err.value.data["runtime_version"] == version
    assert daemon.proc.poll() is None


def test_unknown_version_needs_the_config_override(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(banner=False, load=False)
    with pytest.raises(RpcError) as err:
        daemon.call("load", model=MODEL_ID)
    assert "rkllm.version" in err.value.error["message"]


def test_version_override_from_config(npu_daemon: NpuDaemon) -> None:
    daemon = npu_daemon(abi=12, banner=False, env={"RKLLMD_RKLLM__VERSION": "1.2.2"})
    runtime = daemon.call("status")["runtime"]
    assert runtime["version"] == "1.2.2" and runtime["version_source"] == "config"
    assert runtime["abi"] == "1.2"
    assert hello(daemon)["message"]["content"] == "all good"


def test_missing_library(npu_daemon: NpuDaemon, npu_models: Path) -> None:
    daemon = npu_daemon(env={"RKLLMD_RKLLM__LIBRARY": str(npu_models / "nope.so")}, load=False)
    with pytest.raises(RpcError) as err:
        daemon.call("load", model=MODEL_ID)
    assert err.value.data["code"] == "backend_unavailable"
    assert "rkllm.library" in err.value.error["message"]


def test_library_from_the_loader_path(npu_daemon: NpuDaemon) -> None:
    lib = double_library()
    daemon = npu_daemon(env={"RKLLMD_RKLLM__LIBRARY": "", "LD_LIBRARY_PATH": str(lib.parent)})
    assert daemon.call("status")["runtime"]["library"] == str(lib)
