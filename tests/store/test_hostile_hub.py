"""A Hub that lies or stalls (hostile, or a bad link), and slow pulls next to other work.

Every case checks what stays true whatever the Hub does: nothing beyond the listed
size is written, nothing unverified is published, a pull stops when it is cancelled,
the daemon stops on SIGTERM, and rescans, reloads and removals answer while pulls run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, RpcError, place_model, short_tempdir, wait_for
from tests.store.conftest import hub_env, pull, tree
from tests.store.hubstub import Fault, HubStub

MiB = 1024 * 1024


def pull_error(daemon: DaemonProcess, **params: Any) -> RpcError:
    client = daemon.client(timeout=90)
    with pytest.raises(RpcError) as err:
        client.call("pull", **params)
    client.close()
    return err.value


def part_sizes(models_dir: Path) -> list[int]:
    return [p.stat().st_size for p in (models_dir / ".staging").rglob("*") if p.is_file()]


def gguf(size: int) -> bytes:
    return b"GGUF\x03\x00\x00\x00" + os.urandom(size - 8)


# --- bodies longer than listed --------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_longer_than_listed_is_corrupt_and_never_kept(
    store_daemon: DaemonProcess, hub: HubStub, chunked: bool
) -> None:
    repo = hub.add_repo("org/liar", {"m.gguf": gguf(1024)})
    repo.faults["m.gguf"] = Fault(oversize=32 * MiB, chunked=chunked)
    error = pull_error(store_daemon, repo="org/liar")
    assert error.data["code"] == "checksum_mismatch" and error.data["file"] == "m.gguf"
    assert "more than its listed 1024 bytes" in error.error["message"]
    assert all(size <= 1024 for size in part_sizes(store_daemon.models_dir))
    assert not (store_daemon.models_dir / "org").exists()
    assert len(hub.gets("m.gguf")) == 1  # corrupt, not transient: no retry
    assert store_daemon.call("list")["pulls"] == []  # nothing left as "resumable"


# --- a trickling Hub ------------------------------------------------------------------


def test_a_trickling_hub_is_cancelled_at_once_and_sigterm_stops(
    start_daemon: Any, models_dir: Path, hub: HubStub
) -> None:
    repo = hub.add_repo("org/slow", {"m.gguf": gguf(MiB)})
    repo.faults["m.gguf"] = Fault(trickle=1.0)  # a byte a second: no read ever times out
    daemon = start_daemon(models_dir, env={**hub_env(hub), "RKLLMD_DRAIN_SECONDS": "3"})
    client = daemon.client()
    client.start("pull", repo="org/slow", progress=True)
    wait_for(lambda: hub.gets("m.gguf"), 30, "the transfer to start")
    client.close()  # the only follower leaves: the pull is cancelled
    wait_for(lambda: "pull of org/slow cancelled" in daemon.log(), 10, "the cancel")
    assert daemon.call("remove", all=True, force=True)["count"] == 0  # no pull is running

    again = daemon.client()
    again.start("pull", repo="org/slow", progress=True)
    wait_for(lambda: len(hub.gets("m.gguf")) == 2, 30, "the second transfer to start")
    assert daemon.stop(timeout=20) == 0  # past 20 s it is SIGKILLed: a non-zero status


def test_a_stalled_transfer_is_retried_then_fails(
    start_daemon: Any, models_dir: Path, hub: HubStub
) -> None:
    repo = hub.add_repo("org/stall", {"m.gguf": gguf(MiB)})
    repo.faults["m.gguf"] = Fault(trickle=0.2)  # 5 bytes/s, far under 64 KiB per window
    env = hub_env(hub, stall_seconds="2", retries="1")
    daemon = start_daemon(models_dir, env=env)
    error = pull_error(daemon, repo="org/stall")
    assert error.data["code"] == "hub_unreachable" and "stalled" in error.error["message"]
    assert len(hub.gets("m.gguf")) == 2  # the first try and one retry
    assert "m.gguf: the transfer stalled" in daemon.log()


# --- files the daemon cannot verify, or must never take from a repo ---------------------


def test_a_file_listed_without_a_hash_is_refused(store_daemon: DaemonProcess, hub: HubStub) -> None:
    repo = hub.add_repo("org/nohash", {"m.gguf": gguf(4096), "config.json": b"{}"})
    repo.files["config.json"].blob_id = None  # type: ignore[assignment]
    error = pull_error(store_daemon, repo="org/nohash")
    assert error.data["code"] == "invalid_listing" and "config.json" in error.error["message"]
    assert hub.gets() == [] and tree(store_daemon.models_dir) == set()


def test_a_pulled_sidecar_never_names_models(
    store_daemon: DaemonProcess, hub: HubStub, models_dir: Path
) -> None:
    place_model(models_dir)  # the owner's model, which the repo tries to take over
    wait_for(lambda: store_daemon.call("list")["models"], 30, "the owner's model listed")
    sidecar = {"aliases": ["smollm2", "taken"], "sampling": {"temperature": 1.9}}
    hub.add_repo(
        "org/aliases",
        {"m.gguf": gguf(4096), "m.rkllmd.json": json.dumps(sidecar).encode()},
    )
    result, _ = pull(store_daemon, repo="org/aliases", include=["*"])
    assert result["models"] == ["m"]
    assert not (models_dir / "org" / "aliases" / "m.rkllmd.json").exists()
    with pytest.raises(RpcError) as err:
        store_daemon.call("show", model="taken")
    assert err.value.data["code"] == "model_not_found"
    assert store_daemon.call("show", model="smollm2")["id"] != "m"


def test_deeply_nested_hub_metadata_is_ignored(store_daemon: DaemonProcess, hub: HubStub) -> None:
    hub.add_repo(
        "org/deep",
        {"m.gguf": gguf(4096), "config.json": b"[" * 50_000 + b"]" * 50_000},
    )
    result, _ = pull(store_daemon, repo="org/deep")
    assert result["models"] == ["m"]
    store_daemon.call("rescan")
    assert [m["id"] for m in store_daemon.call("list")["models"]] == ["m"]
    assert "ignoring metadata file 'org/deep/config.json'" in store_daemon.log()


# --- slow pulls next to everything else --------------------------------------------


def test_six_slow_pulls_starve_nothing(start_daemon: Any, models_dir: Path, hub: HubStub) -> None:
    for i in range(6):
        repo = hub.add_repo(f"org/slow{i}", {"m.gguf": gguf(8 * MiB)})
        repo.faults["m.gguf"] = Fault(rate=256 * 1024)
    past = time.time() - 3600
    for name in ("a.gguf", "b.gguf"):
        (models_dir / name).write_bytes(gguf(1024))
        os.utime(models_dir / name, (past, past))
    daemon = start_daemon(models_dir, env=hub_env(hub))
    clients = [daemon.client() for _ in range(6)]
    for i, client in enumerate(clients):
        client.start("pull", repo=f"org/slow{i}", progress=True)
    wait_for(lambda: len(hub.gets()) >= 6, 30, "six transfers running")

    quick = daemon.client(timeout=15)  # a deadline: each answer must come while they run
    quick.call("rescan")
    os.kill(daemon.proc.pid, signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in daemon.log(), 15, "the reload")
    assert quick.call("remove", model="a")["removed"] == ["a"]
    running = [p for p in quick.call("list")["pulls"] if p["stage"] == "downloading"]
    assert len(running) == 6  # all six were still pulling throughout
    quick.close()
    for client in clients:
        client.close()


# --- filesystem refusals ------------------------------------------------------------


@pytest.fixture
def ro_models() -> Iterator[Path]:
    """A tmpfs models dir (root only) holding one small model, made read-only by the test."""
    base = short_tempdir()
    mount = base / "models"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], check=False
    )
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mount / "m.gguf").write_bytes(gguf(4096))
        past = time.time() - 3600
        os.utime(mount / "m.gguf", (past, past))
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_read_only_models_dir_is_a_storage_error(
    start_daemon: Any, ro_models: Path, hub: HubStub
) -> None:
    hub.add_repo("org/r", {"x.gguf": gguf(4096)})
    daemon = start_daemon(ro_models, env=hub_env(hub))
    subprocess.run(["mount", "-o", "remount,ro", str(ro_models)], check=True)
    error = pull_error(daemon, repo="org/r")
    assert error.data["code"] == "storage_error" and error.code == -32017
    message = error.error["message"]
    assert "read-only" in message.lower() and str(ro_models) not in message
    with pytest.raises(RpcError) as err:
        daemon.call("remove", model="m")
    assert err.value.data["code"] == "storage_error"
    assert [m["id"] for m in daemon.call("list")["models"]] == ["m"]
    assert "Traceback" not in daemon.log()


def test_a_hub_file_name_too_long_for_the_filesystem_is_refused(
    store_daemon: DaemonProcess, hub: HubStub
) -> None:
    hub.add_repo("org/long", {"m.gguf": gguf(4096), "x" * 300 + ".json": b"{}"})
    error = pull_error(store_daemon, repo="org/long", include=["*"])
    assert error.data["code"] == "invalid_listing" and hub.gets() == []
    assert tree(store_daemon.models_dir) == set()


def test_a_password_in_the_hub_endpoint_is_never_shown(start_daemon: Any, models_dir: Path) -> None:
    with socket.socket() as reserved:  # bound, not listening: connections are refused
        reserved.bind(("127.0.0.1", 0))
        endpoint = f"http://user:s3cret@127.0.0.1:{reserved.getsockname()[1]}"
        daemon = start_daemon(models_dir, env={"RKLLMD_HUB__ENDPOINT": endpoint})
        error = pull_error(daemon, repo="org/r")
    assert error.data["code"] == "hub_unreachable"
    assert "s3cret" not in json.dumps(error.error) and "***@127.0.0.1" in error.error["message"]
    assert "s3cret" not in daemon.log()


def test_a_password_in_an_invalid_endpoint_is_not_echoed(models_dir: Path) -> None:
    env = {**os.environ, "RKLLMD_HUB__ENDPOINT": "ftp://user:s3cret@example.org"}
    argv = [
        sys.executable,
        "-m",
        "rkllmd",
        "--config",
        "/dev/null",
        "--models-dir",
        str(models_dir),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "hub.endpoint" in done.stderr
    assert "s3cret" not in done.stderr
