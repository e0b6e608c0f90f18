"""rkllmctl as a real subprocess against a real daemon serving the real SmolLM2 model."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import MODEL_FILE, MODEL_ID, DaemonProcess, short_tempdir, wait_for

RKLLMCTL = Path(sys.executable).with_name("rkllmctl")
PROMPT = "Say hello"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def ctl(sock: Path | str, *args: str, timeout: float = 120) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [str(RKLLMCTL), "--socket", str(sock), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


def ok(sock: Path | str, *args: str) -> Run:
    result = ctl(sock, *args)
    assert result.code == 0, f"rkllmctl {' '.join(args)} exited {result.code}:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    return result


def ls_ids(sock: Path) -> list[str]:
    return [m["id"] for m in ok(sock, "--json", "ls").json()]


@pytest.fixture
def idle(start_daemon, smol_dir: Path) -> DaemonProcess:  # type: ignore[no-untyped-def]
    """A daemon with SmolLM2 in its models dir, nothing loaded."""
    return start_daemon(smol_dir)


# --- status / ls / show ---------------------------------------------------------------


def test_status_human_and_json(daemon: DaemonProcess) -> None:
    human = ok(daemon.socket, "status").stdout
    assert re.search(r"^state:\s+ready$", human, re.M)
    assert re.search(rf"^model:\s+{re.escape(MODEL_ID)}$", human, re.M)
    assert re.search(r"^format:\s+gguf$", human, re.M)
    worker = daemon.call("status")["worker_pid"]
    assert re.search(rf"^worker pid:\s+{worker}$", human, re.M)
    assert re.search(r"^queue:\s+0/8$", human, re.M)

    for argv in (("--json", "status"), ("status", "--json")):
        status = ok(daemon.socket, *argv).json()
        assert status["state"] == "ready" and status["model"] == MODEL_ID
        assert status["worker_pid"] == worker


def test_ls_human_and_json(daemon: DaemonProcess) -> None:
    header, *rows = ok(daemon.socket, "ls").stdout.splitlines()
    assert header.split() == ["ID", "FORMAT", "SIZE", "MODIFIED", "LOADED"]
    assert len(rows) == 1
    row = rows[0].split()
    assert row[0] == MODEL_ID and row[1] == "gguf" and row[3] == "MiB" and row[-1] == "*"

    models = ok(daemon.socket, "--json", "ls").json()
    assert isinstance(models, list) and len(models) == 1
    model = models[0]
    assert {"id", "format", "size_bytes", "loaded"} <= model.keys()
    assert model["id"] == MODEL_ID and model["format"] == "gguf" and model["loaded"] is True
    assert model["size_bytes"] == (daemon.models_dir / MODEL_FILE).stat().st_size


@pytest.mark.real_model
def test_show_human_and_json(daemon: DaemonProcess) -> None:
    human = ok(daemon.socket, "show", "smollm2").stdout
    assert re.search(rf"^id:\s+{re.escape(MODEL_ID)}$", human, re.M)
    assert re.search(rf"^file:\s+{re.escape(MODEL_FILE)}$", human, re.M)
    assert re.search(r"^loaded:\s+yes$", human, re.M)
    assert "props:" in human and re.search(r"^  architecture:\s+llama$", human, re.M)

    shown = ok(daemon.socket, "--json", "show", "smollm2").json()
    assert shown["id"] == MODEL_ID and shown["loaded"] is True
    assert shown["props"]["architecture"] == "llama"


# --- unload / load / run ---------------------------------------------------------------


def test_unload_then_load_by_prefix(daemon: DaemonProcess) -> None:
    unloaded = ok(daemon.socket, "unload")
    assert unloaded.stdout.strip() == f"unloaded {MODEL_ID}"
    assert ok(daemon.socket, "unload").stdout.strip() == "no model was loaded"
    status = ok(daemon.socket, "--json", "status").json()
    assert status["state"] == "idle" and status["model"] is None
    assert [m["loaded"] for m in ok(daemon.socket, "--json", "ls").json()] == [False]
    assert re.search(r"^state:\s+idle$", ok(daemon.socket, "status").stdout, re.M)

    loaded = ok(daemon.socket, "load", "smollm2")
    assert loaded.stdout.strip() == f"loaded {MODEL_ID} (gguf)"
    stages = [line.split(":")[0] for line in loaded.stderr.splitlines()]  # not a TTY: lines
    assert stages[0] == "starting" and stages[-1] == "ready"
    assert ok(daemon.socket, "--json", "status").json()["state"] == "ready"

    assert ok(daemon.socket, "--json", "unload").json()["state"] == "idle"
    as_json = ok(daemon.socket, "--json", "load", "SmolLM2")
    assert as_json.stderr == ""  # no progress lines in JSON mode
    status = as_json.json()
    assert status["state"] == "ready" and status["model"] == MODEL_ID


def test_run_streams_tokens_to_stdout_and_stats_to_stderr(daemon: DaemonProcess) -> None:
    result = ok(daemon.socket, "run", "smollm2", PROMPT, "--max-tokens", "8")
    assert result.stdout.strip()
    assert result.stdout.endswith("\n")
    stats = re.fullmatch(r"\[(\d+) prompt tokens, (\d+) generated, .*\]\n", result.stderr)
    assert stats, result.stderr
    assert int(stats[1]) > 0 and 1 <= int(stats[2]) <= 8

    quiet = ok(daemon.socket, "run", "smollm2", PROMPT, "--max-tokens", "8", "-q")
    assert quiet.stdout.strip() and quiet.stderr == ""


def test_run_json_matches_the_streamed_text(daemon: DaemonProcess) -> None:
    greedy = ("--max-tokens", "8", "--temperature", "0")
    # The first prompt after a load is evaluated in one batch, later ones reuse the cached
    # prefix; llama.cpp's logits differ in the last digits between the two, and SmolLM2's
    # top two first tokens for this prompt are that close. Compare two cached runs.
    ok(daemon.socket, "run", "smollm2", PROMPT, *greedy)
    streamed = ok(daemon.socket, "run", "smollm2", PROMPT, *greedy).stdout
    reply = ok(daemon.socket, "--json", "run", "smollm2", PROMPT, *greedy).json()
    assert reply["model"] == MODEL_ID
    assert reply["message"]["role"] == "assistant"
    assert reply["message"]["content"] == streamed[:-1]  # the CLI ends the line
    assert 1 <= reply["usage"]["completion_tokens"] <= 8
    assert reply["finish_reason"] in ("stop", "length")


def test_run_reads_the_prompt_from_stdin(daemon: DaemonProcess) -> None:
    done = subprocess.run(
        [str(RKLLMCTL), "--socket", str(daemon.socket), "run", "smollm2", "--max-tokens", "4"],
        input=PROMPT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() and "generated" in done.stderr


# --- exit codes ---------------------------------------------------------------------------


def test_unknown_model_exits_1_listing_available_ids(idle: DaemonProcess) -> None:
    for command in (("show", "nosuchmodel"), ("load", "nosuchmodel"), ("run", "nosuch", "hi")):
        result = ctl(idle.socket, *command)
        assert result.code == 1, command
        assert "not found" in result.stderr and MODEL_ID in result.stderr
        assert result.stderr.startswith("rkllmctl: ")
        assert result.stdout == ""

    as_json = ctl(idle.socket, "--json", "show", "nosuchmodel")
    assert as_json.code == 1
    error = as_json.json()["error"]
    assert error["code"] == "model_not_found" and error["rpc_code"] == -32001
    assert error["data"]["available"] == [MODEL_ID]
    assert ok(idle.socket, "--json", "status").json()["state"] == "idle"  # still serving


def test_daemon_error_for_unsafe_name_exits_1(idle: DaemonProcess) -> None:
    result = ctl(idle.socket, "show", "../etc/passwd")
    assert result.code == 1
    assert "'..'" in result.stderr and str(idle.models_dir) not in result.stderr


USAGE_MISTAKES = [
    (),
    ("frobnicate",),
    ("show",),
    ("run",),
    ("load", "smollm2", "--ctx-size", "-5"),
    ("run", "smollm2", "hi", "--max-tokens", "zero"),
    ("--timeout", "0", "status"),
    ("status", "extra-argument"),
]


def test_usage_errors_exit_2(idle: DaemonProcess) -> None:
    for argv in USAGE_MISTAKES:  # one daemon for all: each would otherwise be served
        result = ctl(idle.socket, *argv)
        assert result.code == 2, argv
        assert "usage:" in result.stderr and "Traceback" not in result.stderr
    assert ok(idle.socket, "--json", "status").json()["state"] == "idle"


def test_daemon_not_running_exits_3(start_daemon, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    work = short_tempdir()
    try:
        missing = ctl(work / "absent.sock", "status")
        assert missing.code == 3
        assert "no control socket" in missing.stderr and "is rkllmd running?" in missing.stderr

        stale = work / "stale.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(stale))
        listener.close()  # the file remains and nobody listens: a crashed daemon's leftover
        refused = ctl(stale, "ls")
        assert refused.code == 3 and "nothing is listening" in refused.stderr

        as_json = ctl(work / "absent.sock", "--json", "ls")
        assert as_json.code == 3
        assert as_json.json()["error"]["code"] == "daemon_unreachable"
    finally:
        shutil.rmtree(work, ignore_errors=True)

    daemon = start_daemon(models_dir)
    assert ok(daemon.socket, "status").code == 0
    # Stopped by hand: daemon.stop() removes the daemon's temp dir, socket included, so
    # the socket check must come between the exit and that clean-up.
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    assert not daemon.socket.exists()  # the daemon removes its socket on the way out
    gone = ctl(daemon.socket, "status")
    assert gone.code == 3 and "is rkllmd running?" in gone.stderr


# --- the watcher, seen through rkllmctl ----------------------------------------------------

# Debounce, the settle window and its re-check, plus a new rkllmctl process per poll: a
# loaded machine can take seconds. A deadline, not a timing: passing runs end far sooner.
WATCH_DEADLINE = 30.0


def test_added_gguf_shows_up_in_ls_and_disappears_when_deleted(idle: DaemonProcess) -> None:
    assert ls_ids(idle.socket) == [MODEL_ID]
    extra = idle.models_dir / "Another-Model.Q4_1.gguf"
    shutil.copyfile(idle.models_dir / MODEL_FILE, extra)  # fresh mtime: must settle first
    size = extra.stat().st_size

    def listed() -> dict[str, Any]:
        return {m["id"]: m for m in ok(idle.socket, "--json", "ls").json()}

    # Wait for the whole file: should the copy have paused longer than the settle window
    # (a loaded machine), a part was listed until the rescan after its last write.
    wait_for(
        lambda: listed().get("Another-Model.Q4_1", {}).get("size_bytes") == size,
        WATCH_DEADLINE,
        "the whole copy in rkllmctl ls",
    )
    assert listed()["Another-Model.Q4_1"]["loaded"] is False
    assert "Another-Model.Q4_1" in ok(idle.socket, "ls").stdout

    extra.unlink()
    wait_for(
        lambda: ls_ids(idle.socket) == [MODEL_ID], WATCH_DEADLINE, "the copy to leave rkllmctl ls"
    )


# --- the embedding model and templates ----------------------------------------------------


def test_embedding_model_beside_the_chat_model(start_daemon, smol_dir: Path) -> None:  # type: ignore[no-untyped-def]
    os.link(smol_dir / MODEL_FILE, smol_dir / "embedder.gguf")
    os.utime(smol_dir / "embedder.gguf", (1, 1))
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"])
    loaded = ok(daemon.socket, "load", "--embedding", "embedder")
    assert loaded.stdout.strip() == "loaded embedder as the embedding model"
    status = ok(daemon.socket, "--json", "status").json()
    assert status["model"] == MODEL_ID and status["embedding"]["model"] == "embedder"
    assert status["embedding"]["worker_pid"] not in (None, status["worker_pid"])
    human = ok(daemon.socket, "status").stdout
    pid = status["embedding"]["worker_pid"]
    assert re.search(rf"^embedding:\s+embedder \(worker pid {pid}\)$", human, re.M), human
    assert daemon.call("embed", input="hello")["model"] == "embedder"
    assert sorted(m["id"] for m in ok(daemon.socket, "--json", "ls").json() if m["loaded"]) == [
        MODEL_ID,
        "embedder",
    ]
    refused = ctl(daemon.socket, "load", "--embedding", "--ctx-size", "512", "embedder")
    assert refused.code == 1 and "load options" in refused.stderr
    assert (
        ok(daemon.socket, "unload", "--embedding").stdout.strip()
        == "unloaded the embedding model embedder"
    )
    status = ok(daemon.socket, "--json", "status").json()
    assert status["embedding"] is None and status["model"] == MODEL_ID


def test_load_with_a_template_by_name(daemon: DaemonProcess) -> None:
    ok(daemon.socket, "load", "smollm2", "--template", "llama3")
    status = ok(daemon.socket, "--json", "status").json()
    assert status["options"]["chat_template_name"] == "llama3"
    unknown = ctl(daemon.socket, "load", "smollm2", "--template", "mistrall")
    assert unknown.code == 1 and "mistral" in unknown.stderr  # the names are listed
    assert ok(daemon.socket, "--json", "status").json()["options"]["chat_template_name"] == "llama3"
