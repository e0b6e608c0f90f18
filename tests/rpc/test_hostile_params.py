"""Control requests built to break parsers: a 4xx-style answer, and the model stays."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from tests.helpers import DaemonProcess, wait_for
from tests.http.test_hostile_bodies import deep_tools, with_tools


def test_deeply_nested_tools_are_invalid_params_and_the_worker_lives(
    start_daemon: Any, smol_dir: Path
) -> None:
    daemon: DaemonProcess = start_daemon(smol_dir, args=["--load", "smollm2"])
    before = daemon.call("status")
    params = with_tools({"messages": [{"role": "user", "content": "x"}]}, deep_tools(300))
    client = daemon.client()
    client.send_raw(b'{"jsonrpc":"2.0","id":7,"method":"chat","params":' + params + b"}\n")
    answer = client.read_message()
    assert answer["id"] == 7 and answer["error"]["code"] == -32602, answer
    assert "nested deeper than 64" in answer["error"]["message"]
    after = daemon.call("status")
    assert after["state"] == "ready" and after["worker_pid"] == before["worker_pid"]
    reply = client.call("chat", messages=[{"role": "user", "content": "x"}], max_tokens=2)
    assert json.dumps(reply) and reply["usage"]["completion_tokens"] >= 1


def test_clients_that_send_and_hang_up_unread_leave_no_traceback(
    start_daemon: Any, models_dir: Path
) -> None:
    daemon: DaemonProcess = start_daemon(models_dir)
    for _ in range(20):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(daemon.socket))
            sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"list"}\n' * 5)
    # Every connection's answers met a closed socket (logged at debug level) ...
    wait_for(lambda: daemon.log().count("went away before its answer") >= 20, 30, "the writes")
    assert daemon.call("status")["state"] == "idle"
    log = daemon.log()  # ... and none of them ended in a traceback
    assert "Unhandled exception" not in log and "Traceback" not in log
