"""A hypothesis-driven fuzzer for the JSON-RPC control socket.

Every example opens a connection, writes one framed line (random bytes, random
JSON, request-shaped objects with wrong types for each method's parameters,
batches, notifications), half-closes, and reads every message until the daemon
closes: a half-closed client still gets its answers, so "no answer" is an exact
observation. Each answer must be JSON-RPC 2.0: the right shape, the request's id
echoed (or null when it could not be read), codes in the spec's ranges, never
-32603 (every failure the fuzzer provokes is a client error), and no traceback,
source path or models path in any message. Meanwhile a well-behaved client on
its own connection calls ``status`` every 20 ms and must always get its answer.

Runs against the RKLLM C double (zero delay) with a local Hub stand-in, so
``chat``, ``load`` and ``pull`` do real work quickly. Bounded: fixed examples,
derandomized, about half a minute on two cores.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rkllmd.rpc import schemas as rpc_schemas

from tests.helpers import REPO, DaemonProcess, running_daemon, short_tempdir

MODEL_ID = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
MAX_BATCH = 100
SPEC_CODES = {-32700, -32600, -32601, -32602}
PARAMS = {
    "status": rpc_schemas.NoParams,
    "list": rpc_schemas.NoParams,
    "unload": rpc_schemas.NoParams,
    "rescan": rpc_schemas.NoParams,
    "show": rpc_schemas.ModelParams,
    "load": rpc_schemas.LoadParams,
    "chat": rpc_schemas.ChatParams,
    "embed": rpc_schemas.EmbedParams,
    "pull": rpc_schemas.PullParams,
    "remove": rpc_schemas.RemoveParams,
}
# Markers of an internal detail reaching a client: tracebacks, module names, and the
# directories the code and its temp files live in (derived here, never hard-coded).
LEAKS = (
    "Traceback",
    'File "',
    ".py",
    "site-packages",
    str(REPO),
    tempfile.gettempdir() + "/",
    "/usr/",
    "rkllmd.",
)

FUZZ = settings(
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# --- the daemon and the well-behaved client ------------------------------------------


class Bystander(threading.Thread):
    """Calls ``status`` on one persistent connection for as long as the fuzzing runs."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.stop = threading.Event()
        self.answers = 0
        self.failures: list[str] = []
        self.slowest = 0.0

    def run(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        n = 0
        try:
            sock.connect(str(self.path))
            stream = sock.makefile("rwb")
            while not self.stop.is_set():
                n += 1
                started = time.monotonic()
                stream.write(json.dumps({"jsonrpc": "2.0", "method": "status", "id": n}).encode())
                stream.write(b"\n")
                stream.flush()
                answer = json.loads(stream.readline())
                self.slowest = max(self.slowest, time.monotonic() - started)
                if answer.get("id") != n or "result" not in answer:
                    self.failures.append(repr(answer)[:300])
                else:
                    self.answers += 1
                self.stop.wait(0.02)
        except (OSError, ValueError) as exc:
            self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            sock.close()


class Target:
    def __init__(self, daemon: DaemonProcess, models: Path) -> None:
        self.daemon = daemon
        self.models = models
        self.sent = 0
        self.answers = 0
        self.silent = 0
        self.codes: dict[int, int] = {}


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    from tests.fixtures.build_double import double_library, write_model
    from tests.store.hubstub import HubStub

    hub = HubStub().start()
    root = short_tempdir()
    models = root / "models"
    models.mkdir()
    write_model(models)
    env = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
        "RKLLMD_GENERATION__DEFAULT_MAX_TOKENS": "8",
    }
    bystander: Bystander | None = None
    try:
        with running_daemon(models, env=env, args=["--load", MODEL_ID]) as daemon:
            bystander = Bystander(daemon.socket)
            bystander.start()
            state = Target(daemon, models)
            yield state
            bystander.stop.set()
            bystander.join(15)
            print(
                json.dumps(
                    {
                        "rpc_fuzz": {
                            "sent": state.sent,
                            "answers": state.answers,
                            "silent": state.silent,
                            "codes": dict(sorted(state.codes.items())),
                            "bystander_answers": bystander.answers,
                            "bystander_slowest_ms": round(bystander.slowest * 1000, 1),
                        }
                    }
                )
            )
            assert not bystander.failures, bystander.failures[:5]
            assert bystander.answers > 0
            assert daemon.proc.poll() is None
            log = daemon.log()
            assert "internal error" not in log and "Traceback" not in log, log[-4000:]
    finally:
        if bystander is not None:
            bystander.stop.set()
        hub.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- sending and checking -----------------------------------------------------------


def exchange(target: Target, line: bytes, timeout: float = 30.0) -> list[Any]:
    """Send one line (no newline is added), half-close, read everything until EOF."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(str(target.daemon.socket))
    try:
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    finally:
        sock.close()
    raw = b"".join(chunks)
    assert raw == b"" or raw.endswith(b"\n"), raw[-200:]
    messages = [json.loads(part) for part in raw.split(b"\n") if part]
    answers = [m for m in messages if not _is_server_notification(m)]
    target.sent += 1
    target.answers += len(answers)
    target.silent += not answers
    return answers


def _is_server_notification(message: Any) -> bool:
    return (
        isinstance(message, dict)
        and "id" not in message
        and message.get("method") in ("progress", "token")
        and message.get("jsonrpc") == "2.0"
    )


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, int | float | str) and not isinstance(value, bool))


def check_response(target: Target, response: Any, request_id: Any = "unknown") -> None:
    """One response object: shape, id echo, codes, no leaks."""
    assert isinstance(response, dict), response
    assert response.get("jsonrpc") == "2.0", response
    assert "id" in response and _valid_id(response["id"]), response
    assert ("result" in response) != ("error" in response), response
    if request_id != "unknown":
        expected = request_id if _valid_id(request_id) else None
        if "result" in response:
            assert response["id"] == expected, (response, request_id)
        else:
            assert response["id"] in (expected, None), (response, request_id)
    if "error" in response:
        error = response["error"]
        assert isinstance(error, dict) and set(error) <= {"code", "message", "data"}, error
        code = error["code"]
        assert isinstance(code, int) and not isinstance(code, bool), error
        assert code in SPEC_CODES or -32099 <= code <= -32000, error
        assert isinstance(error["message"], str) and error["message"], error
        target.codes[code] = target.codes.get(code, 0) + 1
        text = json.dumps(error, ensure_ascii=False)
        for leak in (*LEAKS, str(target.models)):
            assert leak not in text, (leak, error)
        data = error.get("data")
        if isinstance(data, dict) and "code" in data:
            assert isinstance(data["code"], str) and data["code"].isidentifier(), error


def _expects_answer(entry: Any) -> bool:
    """False only for a well-formed notification (which never gets an answer)."""
    return not (
        isinstance(entry, dict)
        and "id" not in entry
        and entry.get("jsonrpc") == "2.0"
        and isinstance(entry.get("method"), str)
        and (("params" not in entry) or isinstance(entry.get("params"), dict | list))
    )


def check_exchange(target: Target, payload: Any, answers: list[Any]) -> None:
    """Check the answers to a JSON ``payload`` that was sent as one line."""
    if isinstance(payload, list) and payload and len(payload) <= MAX_BATCH:
        expected = [e for e in payload if _expects_answer(e)]
        if not expected:
            assert answers == [], answers  # a batch of notifications: not even []
            return
        assert len(answers) == 1 and isinstance(answers[0], list), answers
        batch = answers[0]
        with_id = [e for e in expected if isinstance(e, dict) and "id" in e]
        assert len(with_id) <= len(batch) <= len(expected), (payload, batch)
        ids = [e.get("id") for e in with_id]
        for response in batch:
            check_response(target, response)
            if "result" in response:
                assert response["id"] in ids, (response, ids)
        return
    if isinstance(payload, list):  # [] or too large: one error for the whole batch
        assert len(answers) == 1, answers
        check_response(target, answers[0], None)
        assert answers[0]["error"]["code"] == -32600
        return
    if not _expects_answer(payload):
        assert answers == [], (payload, answers)
        return
    assert len(answers) == 1, (payload, answers)
    request_id = payload.get("id") if isinstance(payload, dict) and "id" in payload else None
    check_response(target, answers[0], request_id)


# --- strategies -----------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "..", "../../etc/passwd", "/etc", "\x00", "2.0", "smollm2", MODEL_ID])
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
ids = (
    st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.none()
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_values
)


@st.composite
def wrong_params(draw: st.DrawFn, method: str) -> dict[str, Any]:
    """The method's own parameter names with random (mostly wrong) values, maybe extras."""
    fields = list(PARAMS[method].model_fields)
    chosen = draw(st.lists(st.sampled_from(fields), unique=True)) if fields else []
    params = {name: draw(json_values) for name in chosen}
    if draw(st.booleans()):
        params.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return params


@st.composite
def requests(draw: st.DrawFn) -> Any:
    method = draw(st.sampled_from(sorted(PARAMS)))
    entry: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        entry["jsonrpc"] = "2.0"
    else:
        entry["jsonrpc"] = draw(json_values)
    entry["method"] = method if draw(st.integers(0, 7)) else draw(json_values)
    shape = draw(st.integers(0, 9))
    if shape < 7:
        entry["params"] = draw(wrong_params(method))
    elif shape == 7:
        entry["params"] = draw(json_values)
    elif shape == 8:
        entry["params"] = draw(st.lists(json_values, max_size=3))
    if draw(st.integers(0, 4)):
        entry["id"] = draw(ids)
    # Keep the fuzzing from deleting the model or waiting on a stream of tokens.
    if entry["method"] == "remove" and isinstance(entry.get("params"), dict):
        entry["params"]["force"] = False
    return entry


payloads = (
    requests()
    | st.lists(requests(), min_size=1, max_size=6)
    | st.lists(requests() | json_values, min_size=1, max_size=4)
    | json_values
)


# --- the tests ------------------------------------------------------------------------


@settings(FUZZ, max_examples=1000)
@given(payload=payloads)
def test_json_payloads_get_conformant_answers(target: Target, payload: Any) -> None:
    line = json.dumps(payload, ensure_ascii=bool(target.sent % 2)).encode() + b"\n"
    check_exchange(target, payload, exchange(target, line))


@settings(FUZZ, max_examples=300)
@given(raw=st.binary(max_size=300))
def test_random_bytes_get_parse_errors_or_answers(target: Target, raw: bytes) -> None:
    line = raw.replace(b"\n", b" ") + (b"\n" if raw[:1] != b"x" else b"")  # some partial lines
    answers = exchange(target, line)
    try:
        payload = json.loads(line)
    except (ValueError, RecursionError):
        if not line.strip():
            assert answers == []
            return
        assert len(answers) == 1, (line, answers)
        check_response(target, answers[0], None)
        assert answers[0]["error"]["code"] == -32700, answers
        return
    check_exchange(target, payload, answers)


def _line(text: str) -> bytes:
    return text.encode() + b"\n"


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


SHOW_REQUEST = '{"jsonrpc":"2.0","method":"show","id":2,"params":{"model":@}}'
LOAD_REQUEST = '{"jsonrpc":"2.0","method":"load","id":3,"params":{"model":"q","ctx_size":@}}'
CHAT_REQUEST = (
    '{"jsonrpc":"2.0","method":"chat","id":5,'
    '"params":{"messages":[{"role":"user","content":"x"}],"max_tokens":2@}}'
)
SILENT = None  # no answer at all
ANY_ERROR = 1  # a conformant error, code free
RESULT = 0
EDGE_LINES: list[tuple[str, bytes, int | None]] = [
    ("invalid utf-8", b'{"jsonrpc":"2.0","method":"status","id":"\xff\xfe"}\n', -32700),
    (
        "lone surrogate",
        _line('{"jsonrpc":"2.0","method":"show","params":{"model":"\\ud800"},"id":1}'),
        ANY_ERROR,
    ),
    ("deep nesting", _line(_nest(100_000)), -32700),
    (
        "deep params",
        _line(SHOW_REQUEST.replace("@", _nest(5000))),
        -32700,
    ),
    (
        "nesting 900 in params",
        _line(SHOW_REQUEST.replace("@", _nest(900))),
        -32602,
    ),
    (
        "nesting 900 in tools",
        _line(CHAT_REQUEST.replace("@", ',"tools":[{"a":' + _nest(900) + "}]", 1)),
        ANY_ERROR,
    ),
    (
        "nesting 900 in the id",
        _line('{"jsonrpc":"2.0","method":"status","id":@}'.replace("@", _nest(900))),
        -32600,
    ),
    (
        "huge integer",
        _line(LOAD_REQUEST.replace("@", ("9" * 5000))),
        -32700,
    ),
    (
        "big integer",
        _line(LOAD_REQUEST.replace("@", ("9" * 300))),
        -32602,
    ),
    ("huge float", _line(CHAT_REQUEST.replace("@", ',"temperature":1e999')), -32602),
    ("NaN", _line(CHAT_REQUEST.replace("@", ',"top_p":NaN')), -32602),
    (
        "huge id",
        _line('{"jsonrpc":"2.0","method":"status","id":@}'.replace("@", ("1" * 4000))),
        RESULT,
    ),
    ("partial line", b'{"jsonrpc":"2.0","method":"status","id":7}', RESULT),
    ("partial garbage", b'{"jsonrpc":"2.0","meth', -32700),
    ("empty batch", b"[]\n", -32600),
    ("batch of scalars", b"[1,2,3]\n", -32600),
    (
        "too big batch",
        _line(
            json.dumps(
                [{"jsonrpc": "2.0", "method": "status", "id": i} for i in range(MAX_BATCH + 1)]
            )
        ),
        -32600,
    ),
    (
        "notifications only",
        _line('[{"jsonrpc":"2.0","method":"status"},{"jsonrpc":"2.0","method":"nope"}]'),
        SILENT,
    ),
    (
        "notification with bad params",
        _line('{"jsonrpc":"2.0","method":"load","params":{"model":5}}'),
        SILENT,
    ),
    ("positional params", _line('{"jsonrpc":"2.0","method":"show","params":["x"],"id":8}'), -32602),
    (
        "positional params, bad id",
        _line('{"jsonrpc":"2.0","method":"show","params":[],"id":[]}'),
        -32600,
    ),
    (
        "positional params, bad version",
        _line('{"jsonrpc":null,"method":"chat","params":[]}'),
        -32600,
    ),
    ("unknown method", _line('{"jsonrpc":"2.0","method":"__init__","id":9}'), -32601),
    ("dunder method", _line('{"jsonrpc":"2.0","method":"__class__","params":{},"id":10}'), -32601),
    ("jsonrpc 1.0", _line('{"jsonrpc":"1.0","method":"status","id":11}'), -32600),
    ("duplicate keys", _line('{"jsonrpc":"2.0","method":"status","id":12,"id":13}'), RESULT),
    ("blank lines", b"\n\n   \n\t\n", SILENT),
]


@pytest.mark.parametrize(("name", "line", "code"), EDGE_LINES, ids=[c[0] for c in EDGE_LINES])
def test_edge_lines(target: Target, name: str, line: bytes, code: int | None) -> None:
    answers = exchange(target, line)
    if code is SILENT:
        assert answers == [], answers
        return
    assert len(answers) == 1, answers
    answer = answers[0]
    responses = answer if isinstance(answer, list) else [answer]
    if name == "batch of scalars":
        assert isinstance(answer, list) and len(answer) == 3, answer
    for response in responses:
        check_response(target, response)
        if code == RESULT:
            assert "result" in response, response
        elif code == ANY_ERROR:
            assert "error" in response, response
        else:
            assert response["error"]["code"] == code, response
