"""Daemon lifecycle with real processes: systemd notify, signals, crashes, limits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import (
    MODEL_ID,
    DaemonProcess,
    RpcError,
    chat_params,
    model_source,
    short_tempdir,
    wait_for,
)

# Generates until the budget whatever the model says: long enough to interrupt.
LONG = chat_params(max_tokens=2000, stream=True, ignore_eos=True)


def _first_token(client) -> None:  # type: ignore[no-untyped-def]
    message = client.read_message()
    assert message.get("method") == "token", message


def test_ready_status_watchdog_and_stopping(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"], watchdog_usec=400_000)
    notes = daemon.notify
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in notes.messages)
    ready_at = notes.messages.index("READY=1")
    assert f"STATUS=ready {MODEL_ID}; queue 0/8" in notes.messages[ready_at:]
    wait_for(lambda: notes.messages.count("WATCHDOG=1") >= 3, 10, "three watchdog pings")
    # Stopped by hand: stop() removes the daemon's temp dir, socket included, so the
    # socket check must come between the exit and that clean-up.
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(30) == 0
    assert not daemon.socket.exists()
    wait_for(lambda: notes.has("STOPPING=1"), 10, "STOPPING=1")


@pytest.mark.real_model
def test_daemon_process_never_maps_llama(daemon) -> None:
    maps = Path(f"/proc/{daemon.proc.pid}/maps").read_text()
    assert "llama" not in maps and "ggml" not in maps
    worker = daemon.call("status")["worker_pid"]
    assert "libllama" in Path(f"/proc/{worker}/maps").read_text()


def test_sigterm_during_generation_drains_and_exits_zero(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"], env={"RKLLMD_DRAIN_SECONDS": "1"})
    worker = daemon.call("status")["worker_pid"]
    client = daemon.client()
    request = client.start("chat", **LONG)
    _first_token(client)
    daemon.proc.send_signal(signal.SIGTERM)
    result = client.finish(request)  # the caller gets an answer, not a dropped line
    assert result["finish_reason"] == "abort"
    assert daemon.proc.wait(30) == 0
    wait_for(lambda: daemon.notify.has("STOPPING=1"), 10, "STOPPING=1")
    # The daemon is gone; its worker must be too (stopped, not killed).
    assert not _running(worker)
    assert "worker process killed" not in daemon.log()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV])
def test_worker_crash_mid_generation(daemon, sig: signal.Signals) -> None:
    worker = daemon.call("status")["worker_pid"]
    client = daemon.client()
    request = client.start("chat", **LONG)
    _first_token(client)
    os.kill(worker, sig)
    with pytest.raises(RpcError) as err:
        client.finish(request)
    assert err.value.code == -32006 and err.value.data["code"] == "backend_crashed"
    status = daemon.call("status")
    assert status["state"] == "failed" and sig.name in status["reason"]
    assert status["model"] == MODEL_ID and status["worker_pid"] is None
    assert daemon.call("load", model="smollm2")["state"] == "ready"
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] == 2


def test_client_disconnect_aborts_generation(daemon) -> None:
    client = daemon.client()
    client.start("chat", **LONG)
    for _ in range(3):
        _first_token(client)
    client.close()
    # One snapshot: counted as aborted and back to ready (two polls could straddle the end).
    status = wait_for(
        lambda: (
            (s := daemon.call("status"))["counters"]["aborted"] == 1 and s["state"] == "ready" and s
        ),
        30,
        "abort to be counted and the slot freed",
    )
    assert status["counters"]["completed"] == 0
    assert daemon.call("chat", **chat_params(max_tokens=2))["finish_reason"] == "length"


def test_queue_full_when_slot_busy(start_daemon, smol_dir: Path) -> None:
    env = {"RKLLMD_QUEUE__MAX_WAITING": "0", "RKLLMD_LLAMACPP__PARALLEL": "1"}  # one slot
    daemon = start_daemon(smol_dir, args=["--load", "smollm2"], env=env)
    busy = daemon.client()
    busy.start("chat", **LONG)
    _first_token(busy)
    with pytest.raises(RpcError) as err:
        daemon.call("chat", **chat_params(max_tokens=2))
    assert err.value.code == -32004 and err.value.data["code"] == "queue_full"
    assert 1 <= err.value.data["retry_after"] <= 60
    busy.close()


def test_requests_wait_in_fifo_order(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(
        smol_dir, args=["--load", "smollm2"], env={"RKLLMD_LLAMACPP__PARALLEL": "1"}
    )
    # The first request holds the only slot until its client leaves, not for a number
    # of tokens that a fast machine gets through before the queue has been built.
    first = daemon.client()
    first.start("chat", **LONG)
    _first_token(first)
    waiters = [daemon.client() for _ in range(3)]
    ids = []
    for index, client in enumerate(waiters):
        ids.append(client.start("chat", **chat_params(f"Question {index}", max_tokens=2)))
        wait_for(
            lambda i=index: daemon.call("status")["queue"]["waiting"] == i + 1, 10, "queue growth"
        )
    first.close()  # aborted: the waiters run
    for client, request in zip(waiters, ids, strict=True):
        assert client.finish(request)["usage"]["completion_tokens"] == 2


def test_stuck_worker_is_killed(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(
        smol_dir, args=["--load", "smollm2"], env={"RKLLMD_WORKER__STUCK_SECONDS": "1"}
    )
    worker = daemon.call("status")["worker_pid"]
    client = daemon.client()
    request = client.start("chat", **LONG)
    _first_token(client)
    os.kill(worker, signal.SIGSTOP)
    with pytest.raises(RpcError) as err:
        client.finish(request)
    assert err.value.data["code"] == "backend_crashed"
    assert "stopped responding" in daemon.call("status")["reason"]


def test_worker_follows_a_killed_daemon(daemon) -> None:
    worker = daemon.call("status")["worker_pid"]
    daemon.proc.kill()
    daemon.proc.wait()
    wait_for(
        lambda: (
            not Path(f"/proc/{worker}").exists()
            or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
        ),
        10,
        "worker exit",
    )


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def _run_rkllmd(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "rkllmd", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[queue]\nmax_waiting = -3\n", "queue.max_waiting"),
        ("log_level = 'loud'\n", "log_level"),
        ("[http]\nlisten = '0.0.0.0:8080'\n", "api_key"),
        ("not toml at all = = =\n", "not valid TOML"),
        ("surprise = 1\n", "surprise"),
    ],
)
def test_invalid_config_exits_before_binding(models_dir: Path, toml: str, expected: str) -> None:
    work = short_tempdir()
    config = work / "bad.toml"
    config.write_text(toml)
    result = _run_rkllmd(
        "--config", str(config), "--models-dir", str(models_dir), "--socket", str(work / "c.sock")
    )
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (work / "c.sock").exists()


def test_env_and_cli_override_file(models_dir: Path) -> None:
    work = short_tempdir()
    config = work / "ok.toml"
    config.write_text("[queue]\nmax_waiting = 3\n")
    result = _run_rkllmd(
        "--config",
        str(config),
        "--socket",
        str(work / "c.sock"),
        "--listen",
        "0.0.0.0:1",
        env={"RKLLMD_QUEUE__MAX_WAITING": "x"},
    )
    assert result.returncode == 2 and "queue.max_waiting" in result.stderr


def test_stale_socket_is_replaced_and_live_one_is_not(start_daemon, models_dir: Path) -> None:
    work = short_tempdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(work / "c.sock"))
    stale.close()  # a socket file nobody listens on: what a crashed daemon leaves
    first = DaemonProcess(models_dir, socket_path=work / "c.sock")
    try:
        first.wait_ready()
        assert first.call("status")["state"] == "idle"
        second = _run_rkllmd("--models-dir", str(models_dir), "--socket", str(work / "c.sock"))
        assert second.returncode == 1 and "already" in second.stderr
        assert first.call("status")["state"] == "idle"
    finally:
        first.stop()


def test_refuses_to_replace_a_regular_file(models_dir: Path) -> None:
    work = short_tempdir()
    precious = work / "c.sock"
    precious.write_text("keep me")
    result = _run_rkllmd("--models-dir", str(models_dir), "--socket", str(precious))
    assert result.returncode == 2 and "not a socket" in result.stderr
    assert precious.read_text() == "keep me"


def test_sighup_reloads_config_and_rescans(start_daemon, models_dir: Path) -> None:
    work = short_tempdir()
    config = work / "rkllmd.toml"
    config.write_text("[queue]\nmax_waiting = 2\n")
    daemon = start_daemon(models_dir, env={"RKLLMD_CONFIG": str(config)})
    assert daemon.call("status")["queue"]["max"] == 2
    config.write_text("[queue]\nmax_waiting = 5\n")
    (models_dir / "late.gguf").write_bytes(b"GGUF" + bytes(60))
    os.utime(models_dir / "late.gguf", (1, 1))
    daemon.proc.send_signal(signal.SIGHUP)
    # READY=1 again once the reload has finished, rescan included: the new limit alone
    # shows only that the config was read (the rescan comes after it).
    wait_for(lambda: daemon.notify.messages.count("READY=1") == 2, 30, "the reload to finish")
    assert daemon.notify.has("RELOADING=1")
    assert daemon.call("status")["queue"]["max"] == 5
    assert [m["id"] for m in daemon.call("list")["models"]] == ["late"]
    config.write_text("[queue]\nmax_waiting = 'many'\n")
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed" in daemon.log(), 10, "reload failure logged")
    assert daemon.call("status")["queue"]["max"] == 5


def test_sigusr1_and_sigusr2_log_the_status_and_the_daemon_stays(
    start_daemon, models_dir: Path
) -> None:
    daemon = start_daemon(models_dir)
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        daemon.proc.send_signal(sig)
        line = f"{sig.name}: idle; queue 0/"
        wait_for(lambda line=line: line in daemon.log(), 10, f"{sig.name} logged")
    assert daemon.proc.poll() is None
    assert daemon.call("status")["state"] == "idle"


def test_watcher_adds_and_removes_models(start_daemon, models_dir: Path) -> None:
    daemon = start_daemon(models_dir)
    (models_dir / ".staging").mkdir()
    (models_dir / ".staging" / "hidden.gguf").write_bytes(b"GGUF" + bytes(100))
    (models_dir / "copying.gguf.part").write_bytes(b"GGUF" + bytes(100))
    (models_dir / "x.incomplete").write_bytes(b"GGUF" + bytes(100))
    (models_dir / "fresh.gguf").write_bytes(b"GGUF" + bytes(100))
    # Deadlines for file-system watching plus the settle window on a loaded machine.
    wait_for(lambda: daemon.call("list")["models"], 30, "fresh.gguf to appear")
    assert [m["id"] for m in daemon.call("list")["models"]] == ["fresh"]
    (models_dir / "fresh.gguf").unlink()
    wait_for(lambda: not daemon.call("list")["models"], 30, "fresh.gguf to disappear")


def test_file_being_copied_never_appears(start_daemon, models_dir: Path) -> None:
    # A write every ~0.1 s keeps the file unsettled only while no pause between two
    # writes reaches the settle window: 3 s, not the default 0.5 s that one slow
    # iteration on a loaded machine could exceed.
    daemon = start_daemon(models_dir, env={"RKLLMD_MODELS__SETTLE_SECONDS": "3"})
    target = models_dir / "growing.gguf"
    with target.open("wb") as handle:
        for _ in range(15):
            handle.write(b"GGUF" + os.urandom(4096))
            handle.flush()
            assert daemon.call("list")["models"] == []
            time.sleep(0.1)
    wait_for(lambda: daemon.call("list")["models"], 30, "growing.gguf once complete")


def test_hangup_aborts_a_non_streaming_chat(daemon) -> None:
    client = daemon.client()
    client.start("chat", **chat_params(max_tokens=2000, ignore_eos=True))
    wait_for(lambda: daemon.call("status")["state"] == "generating", 10, "generation start")
    client.close()  # a full close, as Ctrl-C on `rkllmctl --json run` does
    wait_for(lambda: daemon.call("status")["counters"]["aborted"] == 1, 15, "abort after hang-up")
    assert daemon.call("status")["counters"]["completed"] == 0


def test_load_at_start_waits_for_a_just_written_model(start_daemon, models_dir: Path) -> None:
    fresh = models_dir / f"{MODEL_ID}.gguf"
    fresh.write_bytes(model_source().read_bytes())  # mtime now: still "settling"
    daemon = start_daemon(models_dir, args=["--load", "smollm2"])
    assert daemon.call("status")["state"] == "ready"
    assert daemon.call("status")["model"] == MODEL_ID
