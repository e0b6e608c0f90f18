"""Unit tests of rkllmctl against a scripted in-test Unix-socket JSON-RPC server."""

from __future__ import annotations

import contextlib
import errno
import grp
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rkllmctl.__main__ import run
from rkllmctl.context import ExitCode
from rkllmctl.paths import choose_socket, resolve_socket_path
from rkllmctl.render import ProgressView, format_duration, format_size, table

Reply = list[dict[str, Any]]
Script = dict[str, Callable[[dict[str, Any]], Reply]]

STATUS = {
    "state": "ready",
    "model": "SmolLM2-135M-Instruct.Q4_1",
    "format": "gguf",
    "reason": None,
    "queue": {"waiting": 0, "max": 8},
    "worker_pid": 4242,
    "loaded_at": "2024-05-01T10:00:00+00:00",
    "uptime_s": 3725.5,
    "version": "0.1.0",
    "options": {},
}
MODELS = [
    {
        "id": "SmolLM2-135M-Instruct.Q4_1",
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "format": "gguf",
        "size_bytes": 98_342_912,
        "modified": "2024-05-01T09:00:00+00:00",
        "loaded": True,
    },
    {
        "id": "qwen-1.8b",
        "file": "qwen-1.8b.rkllm",
        "format": "rkllm",
        "size_bytes": 2_040_109_465,
        "modified": "2024-04-01T09:00:00+00:00",
        "loaded": False,
    },
]


def ok(req: dict[str, Any], result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": req["id"], "result": result}


def fail(req: dict[str, Any], code: int, message: str, data: dict[str, Any]) -> dict[str, Any]:
    error = {"code": code, "message": message, "data": data}
    return {"jsonrpc": "2.0", "id": req["id"], "error": error}


def note(method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


class FakeDaemon:
    """Answers each request line with the scripted lines for its method."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        self.disconnected = threading.Event()
        self.dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")
        self.path = os.path.join(self.dir, "c.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):  # a reset also means "gone"
                self._handle(conn)
            self.disconnected.set()

    def _handle(self, conn: socket.socket) -> None:
        for line in conn.makefile("rb"):
            req = json.loads(line)
            self.requests.append(req)
            for reply in self.script[req["method"]](req):
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    return

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def daemon() -> Iterator[Callable[[Script], FakeDaemon]]:
    started: list[FakeDaemon] = []

    def start(script: Script) -> FakeDaemon:
        started.append(FakeDaemon(script))
        return started[-1]

    yield start
    for fake in started:
        fake.close()


class Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self) -> Any:
        return json.loads(self.stdout)


class TtyInput(io.StringIO):
    def isatty(self) -> bool:
        return True


def ctl(*argv: str, stdin: io.StringIO | None = None, env: dict[str, str] | None = None) -> Result:
    out, err = io.StringIO(), io.StringIO()
    code = run(list(argv), env=env or {}, stdin=stdin or io.StringIO(""), stdout=out, stderr=err)
    return Result(code, out.getvalue(), err.getvalue())


def test_exit_code_values() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "DAEMON_ERROR": 1,
        "USAGE": 2,
        "UNREACHABLE": 3,
        "INTERRUPTED": 130,
    }


# --- unreachable daemon -------------------------------------------------------------


def test_missing_socket_exits_3() -> None:
    result = ctl("--socket", "/tmp/rk-does-not-exist/c.sock", "status")
    assert result.code == 3
    assert result.stderr.startswith("rkllmctl: no control socket at /tmp/rk-does-not-exist")


def test_stale_socket_file_exits_3(tmp_path: Path) -> None:
    sock_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    path = os.path.join(sock_dir, "stale.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.close()  # the file stays, nothing listens: ECONNREFUSED
    try:
        result = ctl("--socket", path, "status")
    finally:
        shutil.rmtree(sock_dir)
    assert result.code == 3
    assert "nothing is listening" in result.stderr


def test_permission_denied_names_the_group(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class DeniedSocket(socket.socket):
        def connect(self, address: Any) -> None:
            raise PermissionError(errno.EACCES, "Permission denied")

    path = tmp_path / "denied.sock"
    path.touch()
    group = grp.getgrgid(path.stat().st_gid).gr_name  # the socket's own group, whatever
    monkeypatch.setattr(socket, "socket", DeniedSocket)
    result = ctl("--socket", str(path), "status")
    assert result.code == 3
    assert f"permission denied: add yourself to the {group} group" in result.stderr


def test_unreachable_with_json_prints_error_object() -> None:
    result = ctl("--socket", "/tmp/rk-does-not-exist/c.sock", "--json", "ls")
    assert result.code == 3
    assert result.json()["error"]["code"] == "daemon_unreachable"


def test_silent_daemon_times_out(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"status": lambda req: []})
    result = ctl("--socket", fake.path, "--timeout", "0.3", "status")
    assert result.code == 3
    assert "no answer from rkllmd within 0.3 s" in result.stderr


def test_connection_closed_before_answer_exits_3() -> None:
    sock_dir = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    path = os.path.join(sock_dir, "h.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def hang_up() -> None:  # read the request, then hang up without answering
        conn, _ = server.accept()
        conn.recv(4096)
        conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    try:
        result = ctl("--socket", path, "status")
    finally:
        server.close()
        shutil.rmtree(sock_dir)
    assert result.code == 3
    assert result.stderr == "rkllmctl: rkllmd closed the connection before answering\n"


# --- daemon errors --------------------------------------------------------------------


def not_found(req: dict[str, Any]) -> Reply:
    data = {"code": "model_not_found", "available": ["smollm2-135m", "qwen-1.8b"]}
    return [fail(req, -32001, "model 'nope' not found", data)]


def test_model_not_found_lists_available_ids(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"load": not_found})
    result = ctl("--socket", fake.path, "load", "nope")
    assert result.code == 1
    lines = result.stderr.splitlines()
    assert lines[0] == "rkllmctl: model 'nope' not found"
    assert "smollm2-135m, qwen-1.8b" in lines[1]
    assert result.stdout == ""


def test_available_ids_not_repeated_when_message_lists_them(
    daemon: Callable[[Script], FakeDaemon],
) -> None:
    data = {"code": "model_not_found", "available": ["a", "b"]}
    message = "model 'x' not found; available: a, b"
    fake = daemon({"load": lambda req: [fail(req, -32001, message, data)]})
    result = ctl("--socket", fake.path, "load", "x")
    assert (result.code, result.stderr) == (1, f"rkllmctl: {message}\n")


def test_ambiguous_model_lists_candidates(daemon: Callable[[Script], FakeDaemon]) -> None:
    data = {"code": "ambiguous_model", "candidates": ["qwen-a", "qwen-b"]}
    fake = daemon({"show": lambda req: [fail(req, -32002, "ambiguous model name 'qwen'", data)]})
    result = ctl("--socket", fake.path, "show", "qwen")
    assert result.code == 1
    assert "candidates: qwen-a, qwen-b" in result.stderr


def test_json_error_shape(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"show": not_found})
    result = ctl("--socket", fake.path, "--json", "show", "nope")
    assert result.code == 1
    error = result.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["message"] == "model 'nope' not found"
    assert error["rpc_code"] == -32001


def test_error_without_data_code_is_rpc_error(daemon: Callable[[Script], FakeDaemon]) -> None:
    def bad(req: dict[str, Any]) -> Reply:
        return [{"jsonrpc": "2.0", "id": req["id"], "error": {"code": -32601, "message": "nope"}}]

    fake = daemon({"status": bad})
    result = ctl("--socket", fake.path, "--json", "status")
    assert result.code == 1
    assert result.json() == {"error": {"code": "rpc_error", "message": "nope", "rpc_code": -32601}}


@pytest.mark.parametrize(
    ("argv", "method"), [(["pull", "org/repo"], "pull"), (["rm", "x"], "remove")]
)
def test_not_available_commands_show_daemon_error(
    daemon: Callable[[Script], FakeDaemon], argv: list[str], method: str
) -> None:
    data = {"code": "not_available"}
    fake = daemon({method: lambda req: [fail(req, -32010, "downloads are not available", data)]})
    result = ctl("--socket", fake.path, *argv)
    assert result.code == 1
    assert result.stderr == "rkllmctl: downloads are not available\n"
    assert fake.requests[0]["method"] == method


def test_pull_and_rm_send_their_params(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon(
        {"pull": lambda req: [ok(req, {"id": "m"})], "remove": lambda req: [ok(req, {"id": "m"})]}
    )
    pull = ctl(
        "--socket",
        fake.path,
        "pull",
        "org/repo",
        "m.gguf",
        "--include",
        "*.gguf",
        "--include",
        "*.json",
        "--revision",
        "main",
    )
    rm = ctl("--socket", fake.path, "rm", "m", "--force")
    assert (pull.code, pull.stdout, rm.code, rm.stdout) == (0, "pulled m\n", 0, "removed m\n")
    params = fake.requests[0]["params"]
    assert params["repo"] == "org/repo" and params["file"] == "m.gguf"
    assert params["include"] == ["*.gguf", "*.json"] and params["revision"] == "main"
    assert fake.requests[1]["params"] == {"model": "m", "force": True}


# --- usage ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["load"],
        ["show"],
        ["--timeout", "-1", "status"],
        ["run"],
        ["load", "m", "--ctx-size", "zero"],
        ["status", "extra"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = ctl(*argv)
    assert result.code == 2
    assert "usage: rkllmctl" in result.stderr


def test_help_exits_0() -> None:
    result = ctl("--help")
    assert result.code == 0
    assert "status" in result.stdout and "run" in result.stdout


def test_unreadable_chat_template_is_usage_error(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"load": lambda req: [ok(req, STATUS)]})
    result = ctl("--socket", fake.path, "load", "m", "--chat-template", "/nonexistent/t.jinja")
    assert result.code == 2
    assert "cannot read chat template /nonexistent/t.jinja" in result.stderr
    assert fake.requests == []


# --- commands -------------------------------------------------------------------------


def test_status_json_has_state_and_model(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"status": lambda req: [ok(req, STATUS)]})
    result = ctl("--socket", fake.path, "--json", "status")
    assert result.code == 0
    body = result.json()
    assert body["state"] == "ready"
    assert body["model"] == "SmolLM2-135M-Instruct.Q4_1"
    assert "params" not in fake.requests[0]


def test_json_flag_also_accepted_after_command(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"status": lambda req: [ok(req, STATUS)]})
    result = ctl("--socket", fake.path, "status", "--json")
    assert result.json()["state"] == "ready"


def test_status_human(daemon: Callable[[Script], FakeDaemon]) -> None:
    failed = {**STATUS, "state": "failed", "reason": "worker crashed", "model": None}
    fake = daemon({"status": lambda req: [ok(req, failed)]})
    result = ctl("--socket", fake.path, "status")
    assert result.code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "state:      failed"
    assert "model:      -" in lines
    assert "worker pid: 4242" in lines
    assert "queue:      0/8" in lines
    assert "uptime:     1h 02m 05s" in lines
    assert "reason:     worker crashed" in lines


def test_status_human_shows_load_options_and_the_last_load_failure(
    daemon: Callable[[Script], FakeDaemon],
) -> None:
    failure = {"model": "broken", "reason": "bad file", "code": "load_failed"}
    loaded = {
        **STATUS,
        "options": {"ctx_size": 2048, "threads": 2},
        "pinned": True,
        "load_failure": {**failure, "restored": "SmolLM2-135M-Instruct.Q4_1"},
    }
    fake = daemon({"status": lambda req: [ok(req, loaded)]})
    lines = ctl("--socket", fake.path, "status").stdout.splitlines()
    assert "options:     ctx_size=2048, threads=2" in lines
    assert "pinned:      yes" in lines
    assert "load failed: broken: bad file; SmolLM2-135M-Instruct.Q4_1 was loaded again" in lines
    fake = daemon({"status": lambda req: [ok(req, STATUS)]})
    assert "options:    defaults" in ctl("--socket", fake.path, "status").stdout.splitlines()


def test_ls_json_is_a_list_of_models(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"list": lambda req: [ok(req, {"models": MODELS})]})
    result = ctl("--socket", fake.path, "--json", "ls")
    assert result.code == 0
    models = result.json()
    assert isinstance(models, list) and len(models) == 2
    for model in models:
        assert {"id", "format", "size_bytes", "loaded"} <= model.keys()
    assert models[0]["loaded"] is True


def test_ls_json_keeps_the_pulls_the_table_shows(daemon: Callable[[Script], FakeDaemon]) -> None:
    pull = {"repo": "o/r", "state": "resumable", "bytes": 1024, "total": 4096}
    fake = daemon({"list": lambda req: [ok(req, {"models": MODELS, "pulls": [pull]})]})
    rows = ctl("--socket", fake.path, "--json", "ls").json()
    assert len(rows) == 3
    for row in rows:
        assert {"id", "format", "size_bytes", "loaded"} <= row.keys()
    assert rows[2] == {
        "id": "o/r",
        "format": None,
        "size_bytes": 1024,
        "loaded": False,
        "pull": pull,
    }
    table = ctl("--socket", fake.path, "ls")
    assert "pull of o/r: resumable, 1.0 KiB of 4.0 KiB" in table.stderr


def test_ls_human_table(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"list": lambda req: [ok(req, {"models": MODELS})]})
    result = ctl("--socket", fake.path, "ls")
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "FORMAT", "SIZE", "MODIFIED", "LOADED"]
    assert lines[1].startswith("SmolLM2-135M-Instruct.Q4_1  gguf    93.8 MiB")
    assert lines[1].endswith("*")
    assert "1.9 GiB" in lines[2] and not lines[2].endswith("*")


def test_ls_empty(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"list": lambda req: [ok(req, {"models": []})]})
    result = ctl("--socket", fake.path, "ls")
    assert (result.code, result.stdout) == (0, "no models in the models directory\n")


def test_show_human_includes_props(daemon: Callable[[Script], FakeDaemon]) -> None:
    model = {**MODELS[0], "props": {"n_ctx": 2048, "chat_template": "{{ a }}\n{{ b }}"}}
    fake = daemon({"show": lambda req: [ok(req, model)]})
    result = ctl("--socket", fake.path, "show", "smollm2")
    assert result.code == 0
    assert fake.requests[0]["params"] == {"model": "smollm2"}
    out = result.stdout
    assert "size:     93.8 MiB" in out and "loaded:   yes" in out
    assert "props:\n" in out and "  n_ctx:         2048" in out
    assert "  chat_template: {{ a }}\n                 {{ b }}" in out


def load_script(req: dict[str, Any]) -> Reply:
    return [
        note("progress", stage="starting worker", fraction=None, message=""),
        note("progress", stage="loading", fraction=0.5, message="weights"),
        note("progress", stage="loading", fraction=1.0, message="weights"),
        ok(req, STATUS),
    ]


def test_load_shows_progress_lines_and_result(
    daemon: Callable[[Script], FakeDaemon], tmp_path: Path
) -> None:
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    fake = daemon({"load": load_script})
    result = ctl(
        "--socket",
        fake.path,
        "load",
        "smollm2",
        "--ctx-size",
        "4096",
        "--threads",
        "4",
        "--chat-template",
        str(template),
    )
    assert result.code == 0
    assert result.stdout == "loaded SmolLM2-135M-Instruct.Q4_1 (gguf)\n"
    assert result.stderr == "starting worker\nloading: weights (50%)\n"
    assert fake.requests[0]["params"] == {
        "model": "smollm2",
        "ctx_size": 4096,
        "threads": 4,
        "chat_template": template.read_text(),
        "progress": True,
    }


def test_load_json_prints_status_without_progress(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"load": load_script})
    result = ctl("--socket", fake.path, "--json", "load", "smollm2")
    assert result.json()["state"] == "ready"
    assert "progress" not in fake.requests[0]["params"]
    assert result.stderr == ""


def test_unload_and_rescan(daemon: Callable[[Script], FakeDaemon]) -> None:
    idle = {**STATUS, "state": "idle", "model": None}
    fake = daemon(
        {"unload": lambda req: [ok(req, idle)], "rescan": lambda req: [ok(req, {"models": 3})]}
    )
    assert ctl("--socket", fake.path, "unload").stdout == "unloaded\n"  # an older daemon
    assert ctl("--socket", fake.path, "--json", "unload").json()["state"] == "idle"
    assert ctl("--socket", fake.path, "rescan").stdout == "rescanned: 3 models\n"
    fake = daemon({"unload": lambda req: [ok(req, {**idle, "unloaded": None})]})
    assert ctl("--socket", fake.path, "unload").stdout == "no model was loaded\n"
    fake = daemon({"unload": lambda req: [ok(req, {**idle, "unloaded": "m"})]})
    assert ctl("--socket", fake.path, "unload").stdout == "unloaded m\n"


def test_progress_bar_on_a_tty() -> None:
    stream = io.StringIO()
    view = ProgressView(stream, tty=True)
    view.on_notification("progress", {"stage": "loading", "fraction": 0.25, "message": "w"})
    view.on_notification("token", {"text": "ignored"})
    view.finish()
    text = stream.getvalue()
    assert text.startswith("\rloading [######------------------]  25% w\x1b[J")
    assert text.endswith("\r\x1b[J")


# --- run ------------------------------------------------------------------------------


def chat_result(content: str) -> dict[str, Any]:
    return {
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": 9,
            "completion_tokens": 3,
            "total_tokens": 12,
            "cached_tokens": 0,
        },
        "timings": {"ttft_ms": 41.2, "tokens_per_s": 55.5},
    }


def streaming_chat(req: dict[str, Any]) -> Reply:
    pieces = ["Hel", "lo", " wörld"]
    tokens = [note("token", text=p) for p in pieces] if req["params"].get("stream") else []
    noise = [{"jsonrpc": "2.0", "id": "other", "result": None}]  # not ours: ignored
    return [*tokens, *noise, ok(req, chat_result("".join(pieces)))]


def test_run_streams_tokens_in_order(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"chat": streaming_chat})
    result = ctl(
        "--socket",
        fake.path,
        "run",
        "smollm2",
        "Say hello",
        "--system",
        "Be brief",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
        "--seed",
        "7",
        "--stop",
        "\n\n",
        "--stop",
        "END",
    )
    assert result.code == 0
    assert result.stdout == "Hello wörld\n"
    assert result.stderr == "[9 prompt tokens, 3 generated, 55.5 tok/s, first token 41 ms]\n"
    params = fake.requests[0]["params"]
    assert params["stream"] is True
    assert params["messages"] == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Say hello"},
    ]
    assert (params["max_tokens"], params["temperature"], params["seed"]) == (16, 0.0, 7)
    assert params["stop"] == ["\n\n", "END"]
    assert "top_p" not in params


def test_run_quiet_and_stdin_prompt(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"chat": streaming_chat})
    result = ctl("--socket", fake.path, "run", "m", "-q", stdin=io.StringIO("from stdin\n"))
    assert (result.code, result.stdout, result.stderr) == (0, "Hello wörld\n", "")
    assert fake.requests[0]["params"]["messages"] == [{"role": "user", "content": "from stdin"}]


def test_run_empty_stdin_is_usage_error(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"chat": streaming_chat})
    result = ctl("--socket", fake.path, "run", "m", stdin=io.StringIO("  \n"))
    assert result.code == 2
    assert fake.requests == []


def test_run_json_does_not_stream(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"chat": streaming_chat})
    result = ctl("--socket", fake.path, "--json", "run", "m", "hi")
    assert result.code == 0
    assert result.json()["message"]["content"] == "Hello wörld"
    assert fake.requests[0]["params"]["stream"] is False


def test_repl_keeps_history(daemon: Callable[[Script], FakeDaemon]) -> None:
    answers = iter(["first answer", "second answer"])
    fake = daemon({"chat": lambda req: [ok(req, chat_result(next(answers)))]})
    stdin = TtyInput("one\n\ntwo\n/bye\nnot sent\n")
    result = ctl("--socket", fake.path, "run", "m", "-q", stdin=stdin)
    assert result.code == 0
    assert len(fake.requests) == 2
    assert fake.requests[1]["params"]["messages"] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "two"},
    ]
    assert result.stdout == ">>> first answer\n>>> >>> second answer\n>>> "


def test_repl_ends_at_eof_and_survives_daemon_errors(
    daemon: Callable[[Script], FakeDaemon],
) -> None:
    data = {"code": "queue_full", "retry_after": 2}
    fake = daemon({"chat": lambda req: [fail(req, -32003, "queue is full", data)]})
    result = ctl("--socket", fake.path, "run", "m", stdin=TtyInput("hello\n"))
    assert result.code == 0
    assert result.stderr.splitlines() == [
        "Chatting with m. /help lists the commands; /exit or Ctrl-D leaves.",
        "rkllmctl: queue is full",
        "rkllmctl: retry after 2 s",
    ]
    assert result.stdout.endswith(">>> \n")


def test_repl_commands_are_never_sent_to_the_model(
    daemon: Callable[[Script], FakeDaemon],
) -> None:
    answers = iter(["a1", "a2", "a3", "a4"])
    fake = daemon({"chat": lambda req: [ok(req, chat_result(next(answers)))]})
    stdin = TtyInput(
        "/help\none\n/system Be brief.\n/system\ntwo\n/clear\nthree\n"
        "/etc/hosts?\n/nope\n/exit\nnot sent\n"
    )
    result = ctl("--socket", fake.path, "run", "m", stdin=stdin)
    assert result.code == 0
    sent = [r["params"]["messages"] for r in fake.requests]
    assert sent[0] == [{"role": "user", "content": "one"}]
    assert sent[1] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "two"},
    ]
    assert sent[2] == [  # /clear kept the system prompt only
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "three"},
    ]
    assert sent[3][-1] == {"role": "user", "content": "/etc/hosts?"}  # a path, not a command
    assert len(fake.requests) == 4  # /help, /system, /clear, /nope and /exit stayed here
    err = result.stderr
    assert err.startswith("Chatting with m.")
    assert "  /clear   forget the conversation" in err and "system prompt set" in err
    assert "system prompt: Be brief." in err and "conversation cleared" in err
    assert "unknown command /nope; /help lists the commands" in err


def test_ctrl_c_while_streaming_closes_socket_and_exits_130(
    daemon: Callable[[Script], FakeDaemon],
) -> None:
    class InterruptingOutput(io.StringIO):
        def write(self, text: str) -> int:
            if text == "lo":
                raise KeyboardInterrupt
            return super().write(text)

    fake = daemon({"chat": streaming_chat})
    out = InterruptingOutput()
    code = run(
        ["--socket", fake.path, "run", "m", "hi"],
        env={},
        stdout=out,
        stderr=io.StringIO(),
        stdin=io.StringIO(),
    )
    assert code == 130
    assert out.getvalue() == "Hel\n"
    assert fake.disconnected.wait(30)  # a deadline for the fake's thread, not a timing


# --- socket path resolution, rendering, imports -----------------------------------------


def test_socket_resolution_order(tmp_path: Path) -> None:
    system = tmp_path / "system.sock"
    env = {"RKLLMD_SOCKET": "/env/c.sock", "XDG_RUNTIME_DIR": "/run/user/1000"}
    assert choose_socket("/flag.sock", env, system_path=str(system)) == ("/flag.sock", "flag")
    assert resolve_socket_path(None, env, system_path=str(system)) == "/env/c.sock"
    xdg_only = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert choose_socket(None, xdg_only, system_path=str(system)) == (
        "/run/user/1000/rkllmd/control.sock",
        "xdg",
    )
    system.touch()
    assert choose_socket(None, xdg_only, system_path=str(system)).source == "system"
    assert choose_socket(None, {"RKLLMD_SOCKET": ""}, system_path="/nope", uid=1000) == (
        "/tmp/rkllmd-1000/control.sock",
        "tmp",
    )


def test_run_uses_env_socket_unless_flag_given(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon({"status": lambda req: [ok(req, STATUS)]})
    via_env = ctl("--json", "status", env={"RKLLMD_SOCKET": fake.path})
    assert via_env.json()["state"] == "ready"
    flag_wins = ctl("--socket", "/tmp/rk-missing.sock", "status", env={"RKLLMD_SOCKET": fake.path})
    assert flag_wins.code == 3 and "/tmp/rk-missing.sock" in flag_wins.stderr


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (98_342_912, "93.8 MiB"),
        (1024**3 - 1, "1.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
        (None, "-"),
    ],
)
def test_format_size(size: Any, text: str) -> None:
    assert format_size(size) == text


def test_format_duration_and_table() -> None:
    assert [format_duration(s) for s in (5, 65, 3600, 90061)] == [
        "5s",
        "1m 05s",
        "1h 00m 00s",
        "1d 1h 01m",
    ]
    assert table(["A", "LONG"], [["xyz", ""], ["q", "v"]]) == ["A    LONG", "xyz", "q    v"]


def test_doctor_without_daemon_reports_checks() -> None:
    result = ctl("--socket", "/tmp/rk-missing.sock", "doctor")
    assert result.code == 1
    names = [line.split()[1] for line in result.stdout.splitlines()]
    assert names[:3] == ["python", "socket", "daemon"]
    assert "/tmp/rk-missing.sock (from flag)" in result.stdout
    assert any(line.startswith("fail  daemon") for line in result.stdout.splitlines())


def test_doctor_json_with_daemon(daemon: Callable[[Script], FakeDaemon]) -> None:
    fake = daemon(
        {"status": lambda req: [ok(req, STATUS)], "list": lambda req: [ok(req, {"models": []})]}
    )
    result = ctl("--json", "doctor", env={"RKLLMD_SOCKET": fake.path})
    body = result.json()
    checks = {check["name"]: check for check in body["checks"]}
    assert checks["daemon"]["status"] == "ok"
    assert "state ready" in checks["daemon"]["detail"]
    assert checks["socket"]["detail"].endswith("(from env)")
    assert {"render nodes", "board", "librkllmrt"} <= checks.keys()
    assert result.code == (0 if body["ok"] else 1)


def test_cli_imports_no_heavy_packages() -> None:
    """Of the daemon package the CLI may load only the stdlib-only rkllmd.rkllmrt."""
    code = (
        "import rkllmctl.__main__, sys; print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('asyncio','aiohttp','pydantic','rkllmd')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert proc.stdout.strip() == "['rkllmd', 'rkllmd.rkllmrt']"
