"""A client hanging up while a long prompt is evaluated must not cost the model.

llama.cpp sees an abort between decode calls; a ~1,900-token prompt with
``batch_size = 2048`` is one call that takes seconds here (more on a board). Before
the fix the abort grace ran out during that call and the worker was killed: state
``failed``, "the worker did not stop after an abort". The grace here is far below
the prompt's evaluation time on purpose, so the test fails whenever the grace still
applies to a prefill. Real SmolLM2 on llama.cpp, over RPC and over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, wait_for

pytestmark = pytest.mark.real_model

PROMPT = " ".join(f"word{i % 50}" for i in range(680))  # ~1,900 tokens with SmolLM2
ENV = {
    "RKLLMD_LLAMACPP__BATCH_SIZE": "2048",
    "RKLLMD_LLAMACPP__THREADS": "1",
    "RKLLMD_WORKER__ABORT_GRACE_SECONDS": "0.5",
}


@pytest.fixture
def prefill_daemon(start_daemon: Any, smol_dir: Path) -> DaemonProcess:
    daemon: DaemonProcess = start_daemon(smol_dir, args=["--load", "smollm2"], env=ENV)
    return daemon


def settled(daemon: DaemonProcess, aborted: int) -> dict[str, Any]:
    """The status once the aborted generation has ended (ready, or worse)."""

    def done() -> dict[str, Any] | None:
        status = daemon.call("status")
        finished = status["counters"].get("aborted", 0) >= aborted
        return status if finished and status["state"] != "generating" else None

    found: dict[str, Any] = wait_for(done, 300, "the aborted generation to end")
    return found


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def evaluating(daemon: DaemonProcess) -> None:
    """Until the worker is busy with the prompt: it has burnt a CPU second more than
    when idle (the whole prompt takes tens of seconds, so it is still at it)."""
    pid = daemon.call("status")["worker_pid"]
    idle = cpu_seconds(pid)
    wait_for(lambda: cpu_seconds(pid) > idle + 1.0, 120, "the prompt's evaluation")


def hang_up_during_prefill(daemon: DaemonProcess, send: Any) -> None:
    before = daemon.call("status")
    send()
    status = settled(daemon, before["counters"].get("aborted", 0) + 1)
    assert status["state"] == "ready", status
    assert status["worker_pid"] == before["worker_pid"]  # the same worker: never killed
    assert "did not stop after an abort" not in daemon.log()
    reply = daemon.call("chat", messages=[{"role": "user", "content": "Hi"}], max_tokens=2)
    assert reply["usage"]["completion_tokens"] >= 1


def test_rpc_client_gone_during_a_long_prefill(prefill_daemon: DaemonProcess) -> None:
    def send() -> None:
        client = prefill_daemon.client()
        client.start(
            "chat", messages=[{"role": "user", "content": PROMPT}], max_tokens=4, stream=True
        )
        evaluating(prefill_daemon)
        assert client.notifications == []  # nothing read, nothing could have been sent
        client.close()

    hang_up_during_prefill(prefill_daemon, send)


def test_http_client_gone_during_a_long_prefill(prefill_daemon: DaemonProcess) -> None:
    body = json.dumps(
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": 4,
            "stream": True,
        }
    ).encode()

    def send() -> None:
        with socket.create_connection(("127.0.0.1", prefill_daemon.http_port)) as conn:
            head = (
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            conn.sendall(head.encode() + body)
            evaluating(prefill_daemon)

    hang_up_during_prefill(prefill_daemon, send)
