"""JSON-RPC 2.0 conformance and limits of the control socket (real daemon, no model)."""

from __future__ import annotations

import contextlib
import json
import socket
import stat

import pytest

from tests.helpers import RpcClient


@pytest.fixture
def idle(start_daemon, models_dir):  # type: ignore[no-untyped-def]
    return start_daemon(models_dir)


def _line(client: RpcClient, raw: bytes):  # type: ignore[no-untyped-def]
    client.send_raw(raw)
    return client.read_message()


def test_socket_is_0660_from_the_start(idle) -> None:
    mode = stat.S_IMODE(idle.socket.stat().st_mode)
    assert stat.S_ISSOCK(idle.socket.stat().st_mode) and mode == 0o660


def test_parse_error(idle) -> None:
    client = idle.client()
    for raw in (b"{\n", b"not json\n", b"\xff\xfe\n"):
        answer = _line(client, raw)
        assert answer["error"]["code"] == -32700 and answer["id"] is None
        assert "data" not in answer["error"]
    assert client.call("status")["state"] == "idle"


@pytest.mark.parametrize(
    "payload",
    [
        {"jsonrpc": "1.0", "method": "status", "id": 1},
        {"jsonrpc": "2.0", "method": 5, "id": 1},
        {"jsonrpc": "2.0", "id": 1},
        {"jsonrpc": "2.0", "method": "status", "params": "x", "id": 1},
        "just a string",
        42,
    ],
)
def test_invalid_requests(idle, payload) -> None:  # type: ignore[no-untyped-def]
    answer = idle.client().call_raw(payload)
    assert answer["error"]["code"] == -32600


def test_method_not_found(idle) -> None:
    answer = idle.client().call_raw({"jsonrpc": "2.0", "method": "nope", "id": 3})
    assert answer == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found", "data": "nope"},
        "id": 3,
    }


@pytest.mark.parametrize(
    "params",
    [
        [1, 2],
        {"model": 5},
        {"model": ""},
        {"model": "x", "ctx_size": "512"},
        {"model": "x", "ctx_size": -1},
        {"model": "x", "unknown_option": True},
    ],
)
def test_bad_load_params(idle, params) -> None:  # type: ignore[no-untyped-def]
    answer = idle.client().call_raw({"jsonrpc": "2.0", "method": "load", "params": params, "id": 9})
    assert answer["id"] == 9
    assert answer["error"]["code"] == -32602
    assert "Traceback" not in json.dumps(answer)


@pytest.mark.parametrize(
    "params",
    [
        {"messages": []},
        {"messages": [{"role": "wizard", "content": "x"}]},
        {"messages": [{"role": "user", "content": "x"}], "temperature": 1e9},
        {"messages": [{"role": "user", "content": "x"}], "top_p": -1},
        {"messages": [{"role": "user", "content": "x"}], "top_k": -5},
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        {"messages": [{"role": "user", "content": "x"}], "stop": ["s"] * 10_000},
        {"messages": [{"role": "user", "content": "x"}], "seed": "1"},
    ],
)
def test_bad_chat_params_rejected_before_any_work(idle, params) -> None:  # type: ignore[no-untyped-def]
    answer = idle.client().call_raw({"jsonrpc": "2.0", "method": "chat", "params": params, "id": 1})
    assert answer["error"]["code"] == -32602
    assert answer["error"]["data"]["code"] == "invalid_params"
    assert idle.call("status")["counters"]["generations"] == 0


def test_notifications_get_no_answer(idle) -> None:
    client = idle.client()
    client.send_raw(b'{"jsonrpc":"2.0","method":"status"}\n{"jsonrpc":"2.0","method":"nope"}\n')
    client.send_raw(b'[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"list"}]\n')
    # The next thing on the wire is the answer to this call, nothing before it.
    assert client.call_raw({"jsonrpc": "2.0", "method": "status", "id": 77})["id"] == 77


def test_batches_answer_per_entry(idle) -> None:
    client = idle.client()
    assert _line(client, b"[]\n")["error"]["code"] == -32600
    three = _line(client, b"[1,2,3]\n")
    assert [a["error"]["code"] for a in three] == [-32600] * 3
    mixed = client.call_raw(
        [
            {"jsonrpc": "2.0", "method": "status", "id": 1},
            {"foo": 1},
            {"jsonrpc": "2.0", "method": "list", "id": 2},
            {"jsonrpc": "2.0", "method": "status"},
        ]
    )
    assert len(mixed) == 3
    by_id = {a["id"]: a for a in mixed}
    assert by_id[1]["result"]["state"] == "idle"
    assert by_id[2]["result"] == {"models": [], "pulls": []}
    assert by_id[None]["error"]["code"] == -32600


def test_huge_batch_is_refused_whole(idle) -> None:
    batch = [{"jsonrpc": "2.0", "method": "rescan", "id": i} for i in range(10_000)]
    answer = idle.client().call_raw(batch)
    assert isinstance(answer, dict) and answer["error"]["code"] == -32600
    assert "rescan called" not in idle.log()


MAX_LINE_BYTES = 16 * 1024 * 1024  # rpc/server.py: a chat with its images inline


def test_oversize_line_closes_only_that_connection(idle) -> None:
    other = idle.client()
    big = idle.client()
    # The daemon may hang up before we finish sending; its answer is already queued.
    # A hang-up with our bytes still unread by it fails the send with ECONNRESET
    # rather than EPIPE (both are races with the daemon's close, both fine).
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        big.send_raw(
            b'{"jsonrpc":"2.0","method":"status","id":1,"pad":"' + b"x" * (MAX_LINE_BYTES + 4096)
        )
    answer = big.read_message()
    assert answer["error"]["code"] == -32600 and answer["id"] is None
    assert "16384 KiB" in answer["error"]["message"]
    with pytest.raises((ConnectionError, OSError)):
        big.send_raw(b'{"jsonrpc":"2.0","method":"status","id":2}\n' * 1000)
        big.read_message()
    assert other.call("status")["state"] == "idle"
    assert idle.call("status")["state"] == "idle"


def test_half_closed_client_still_gets_its_answer(idle) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(idle.socket))
        sock.sendall(b'{"jsonrpc":"2.0","method":"status","id":5}')  # no newline, then EOF
        sock.shutdown(socket.SHUT_WR)
        with sock.makefile("rb") as stream:
            answer = json.loads(stream.readline())
    assert answer["id"] == 5 and answer["result"]["state"] == "idle"


def test_pipelined_requests_on_one_connection(idle) -> None:
    client = idle.client()
    ids = [client.start("status") for _ in range(20)]
    answers = [client.read_message() for _ in ids]
    assert sorted(a["id"] for a in answers) == ids


def test_errors_never_leak_paths(idle) -> None:
    answer = idle.client().call_raw(
        {"jsonrpc": "2.0", "method": "load", "params": {"model": "absent"}, "id": 1}
    )
    assert answer["error"]["data"]["code"] == "model_not_found"
    assert str(idle.models_dir) not in json.dumps(answer)
