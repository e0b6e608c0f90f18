"""Bad input and faults: hostile listings, corrupt bytes, cut connections, kills, disk
full, offline Hub. Every case checks that nothing half-done becomes visible."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    MODEL_FILE,
    MODEL_ID,
    DaemonProcess,
    RpcError,
    chat_params,
    model_source,
    place_model,
    short_tempdir,
    wait_for,
)
from tests.store.conftest import GGUF, REPO_ID, hub_env, pull, tree
from tests.store.hubstub import Fault, HubStub, Repo

STEM = GGUF.removesuffix(".gguf")
MiB = 1024 * 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pull_error(daemon: DaemonProcess, deadline: float = 120, **params: object) -> RpcError:
    """The pull's error; a pull that takes longer than ``deadline`` fails the test
    through the client's socket timeout (a deadline, not a measured time)."""
    client = daemon.client(timeout=deadline)
    with pytest.raises(RpcError) as err:
        client.call("pull", **params)
    client.close()
    return err.value


def staged_files(models_dir: Path) -> set[str]:
    return {p.name for p in (models_dir / ".staging").rglob("*") if p.is_file()}


# --- hostile listings ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../x.gguf", "/abs/x.gguf", "C:\\x.gguf", "C:x.gguf", "a/../../x.gguf", "a//b"]
)
def test_hostile_listing_is_rejected_before_any_write(
    store_daemon: DaemonProcess, smol_repo: Repo, hub: HubStub, name: str
) -> None:
    smol_repo.extra_siblings.append({"rfilename": name, "size": 10, "blobId": "0" * 40})
    outside = set(os.listdir(store_daemon.models_dir.parent))
    error = pull_error(store_daemon, repo=REPO_ID, file=GGUF)
    assert error.data["code"] == "invalid_listing" and error.code == -32012
    assert hub.gets() == []
    assert tree(store_daemon.models_dir) == set()
    assert set(os.listdir(store_daemon.models_dir.parent)) == outside


# --- corrupt bytes ------------------------------------------------------------------


def test_corrupt_bytes_fail_the_checksum_and_publish_nothing(
    store_daemon: DaemonProcess, smol_repo: Repo
) -> None:
    smol_repo.faults[GGUF] = Fault(corrupt=True)
    error = pull_error(store_daemon, repo=REPO_ID)
    assert error.data["code"] == "checksum_mismatch" and error.data["file"] == GGUF
    assert not (store_daemon.models_dir / "test-org").exists()
    assert all(smol_repo.files[GGUF].sha256 not in n for n in staged_files(store_daemon.models_dir))
    assert store_daemon.call("list")["models"] == []
    with pytest.raises(RpcError) as err:
        store_daemon.call("load", model=STEM)
    assert err.value.data["code"] == "model_not_found"

    # No "resumable" ghost: a checksum failure discards what the transfer staged.
    assert store_daemon.call("list")["pulls"] == []
    assert staged_files(store_daemon.models_dir) == set()
    smol_repo.faults.clear()  # the Hub heals: the next pull works
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert result["models"] == [STEM]


# --- cut connections, retries, kills ------------------------------------------------


def test_connection_dropped_mid_file_resumes_with_range(
    store_daemon: DaemonProcess, smol_repo: Repo, hub: HubStub
) -> None:
    smol_repo.faults[GGUF] = Fault(drop_after=10 * MiB, drops=2)
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert result["models"] == [STEM]
    ranges = [r for _, path, r in hub.gets(GGUF) if r]
    assert ranges and int(ranges[0].removeprefix("bytes=").rstrip("-")) >= 10 * MiB
    assert sha256(store_daemon.models_dir / REPO_ID / GGUF) == sha256(model_source())


def test_server_ignoring_range_still_gives_the_right_bytes(
    store_daemon: DaemonProcess, smol_repo: Repo
) -> None:
    smol_repo.faults[GGUF] = Fault(drop_after=5 * MiB, drops=1, ignore_range=True)
    pull(store_daemon, repo=REPO_ID)
    assert sha256(store_daemon.models_dir / REPO_ID / GGUF) == sha256(model_source())


def test_body_ending_before_the_file_is_retried(
    store_daemon: DaemonProcess, smol_repo: Repo
) -> None:
    # A clean response whose Content-Length is short: http_get's own size check fails,
    # and the pull retries (resuming) instead of failing.
    smol_repo.faults[GGUF] = Fault(short_by=1000, shorts=1)
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert result["models"] == [STEM]
    assert f"{GGUF}: the transfer ended early; retry 1/" in store_daemon.log()
    assert sha256(store_daemon.models_dir / REPO_ID / GGUF) == sha256(model_source())


def test_server_errors_are_retried_with_backoff(
    start_daemon, models_dir: Path, smol_repo: Repo, hub: HubStub
) -> None:
    daemon = start_daemon(models_dir, env=hub_env(hub, retries="2"))
    smol_repo.faults["config.json"] = Fault(status=503, statuses=2)
    result, _ = pull(daemon, repo=REPO_ID)
    assert result["models"] == [STEM]
    assert "config.json: the Hub answered HTTP 503; retry 2/2" in daemon.log()

    broken = hub.add_repo("org/broken", {"m.gguf": b"GGUF" + os.urandom(1000)})
    broken.faults["m.gguf"] = Fault(status=503)
    error = pull_error(daemon, repo="org/broken")
    assert error.data["code"] == "hub_unreachable" and "503" in error.error["message"]
    assert len(hub.gets("m.gguf")) == 3  # the first try and two retries


def _wait_for_part(models_dir: Path, at_least: int) -> Path:
    def part() -> Path | None:
        parts = [p for p in (models_dir / ".staging").rglob("*.part") if p.stat().st_size]
        big = [p for p in parts if p.stat().st_size >= at_least]
        return big[0] if big else None

    found: Path = wait_for(part, 60, f"a .part of {at_least} bytes")
    return found


def test_killed_daemon_resumes_after_restart(
    start_daemon, models_dir: Path, smol_repo: Repo, hub: HubStub
) -> None:
    smol_repo.faults[GGUF] = Fault(rate=20 * MiB)
    first = start_daemon(models_dir, env=hub_env(hub))
    client = first.client()
    client.start("pull", repo=REPO_ID, progress=True)
    part = _wait_for_part(models_dir, 20 * MiB)
    first.proc.kill()
    first.proc.wait(10)
    left = part.stat().st_size

    second = start_daemon(models_dir, env=hub_env(hub))
    listing = second.call("list")
    assert listing["models"] == []  # nothing partial is ever listed
    assert not (models_dir / "test-org").exists()
    assert [d["state"] for d in listing["pulls"]] == ["resumable"]
    assert listing["pulls"][0]["bytes"] >= left

    smol_repo.faults.clear()
    before = len(hub.gets(GGUF))
    result, _ = pull(second, repo=REPO_ID)
    assert result["models"] == [STEM]
    resumed = hub.gets(GGUF)[before:]
    assert len(resumed) == 1 and int(resumed[0][2].removeprefix("bytes=").rstrip("-")) >= left
    assert sha256(models_dir / REPO_ID / GGUF) == sha256(model_source())
    assert staged_files(models_dir) == set()
    assert second.call("list")["pulls"] == []


def test_client_going_away_cancels_and_a_new_pull_resumes(
    store_daemon: DaemonProcess, smol_repo: Repo, hub: HubStub
) -> None:
    # 10 MiB/s: the cancel has ~8 s to land before the 94 MiB file would be complete.
    smol_repo.faults[GGUF] = Fault(rate=10 * MiB)
    client = store_daemon.client()
    client.start("pull", repo=REPO_ID, progress=True)
    _wait_for_part(store_daemon.models_dir, 10 * MiB)
    client.close()
    wait_for(
        lambda: "pull of test-org/SmolLM2-135M-Instruct-GGUF cancelled" in store_daemon.log(),
        30,
        "the pull to be cancelled",
    )
    smol_repo.faults.clear()
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert result["models"] == [STEM]
    assert any(r for _, _, r in hub.gets(GGUF))  # the second GET was a Range request


def test_orphaned_staging_is_removed_at_start(start_daemon, models_dir: Path) -> None:
    junk = models_dir / ".staging" / "0123456789abcdef"
    junk.mkdir(parents=True)
    (junk / "x.part").write_bytes(b"x" * 100)
    (models_dir / ".staging" / "stray.incomplete").write_bytes(b"y")
    start_daemon(models_dir)
    assert tree(models_dir) == {".staging"}


# --- disk full ----------------------------------------------------------------------


@pytest.fixture
def tmpfs_models() -> Iterator[Path]:
    """A 128 MiB tmpfs as models dir (root only), holding the real SmolLM2 (94 MiB)."""
    base = short_tempdir()
    mount = base / "models"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("cannot mount a tmpfs here (needs root); see test_precheck_refuses_*")
    try:
        place_model(mount)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _fill(path: Path, leave: int) -> None:
    free = shutil.disk_usage(path.parent).free
    with path.open("wb") as handle:
        handle.truncate(0)
        block = b"\0" * MiB
        for _ in range(max(free - leave, 0) // MiB):
            handle.write(block)


def test_disk_full_fails_cleanly(start_daemon, tmpfs_models: Path, hub: HubStub) -> None:
    repo = hub.add_repo("org/big", {"big.gguf": b"GGUF" + os.urandom(40 * MiB)})
    hub.add_repo("org/fill", {"fill.gguf": b"GGUF" + os.urandom(20 * MiB)})
    daemon = start_daemon(tmpfs_models, env=hub_env(hub))

    error = pull_error(daemon, repo="org/big")  # refused by the free-space check
    assert error.data["code"] == "insufficient_storage" and hub.gets() == []
    assert error.data["needed_bytes"] == repo.files["big.gguf"].size

    filler = tmpfs_models / ".filler"
    hub.repos["org/fill"].faults["fill.gguf"] = Fault(on_get=lambda: _fill(filler, MiB))
    error = pull_error(daemon, repo="org/fill")  # passes the check, then ENOSPC
    assert error.data["code"] == "insufficient_storage"
    assert staged_files(tmpfs_models) == set()
    assert not (tmpfs_models / "org").exists()
    filler.unlink()

    assert [m["id"] for m in daemon.call("list")["models"]] == [MODEL_ID]
    daemon.call("load", model=MODEL_ID)
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] >= 1


def test_precheck_refuses_when_min_free_would_be_crossed(
    start_daemon, models_dir: Path, smol_repo: Repo, hub: HubStub
) -> None:
    free = shutil.disk_usage(models_dir).free
    daemon = start_daemon(models_dir, env=hub_env(hub, min_free_bytes=str(free)))
    error = pull_error(daemon, repo=REPO_ID)
    assert (
        error.data["code"] == "insufficient_storage" and "must stay free" in error.error["message"]
    )
    assert hub.gets() == [] and tree(models_dir) == set()


# --- offline and unreachable Hub ----------------------------------------------------


def test_offline_mode_fails_fast_and_local_models_still_serve(
    start_daemon, smol_dir: Path, hub: HubStub, smol_repo: Repo
) -> None:
    daemon = start_daemon(smol_dir, env={**hub_env(hub), "HF_HUB_OFFLINE": "1"})
    # A deadline far below any retry schedule, with room for a first pull's imports.
    error = pull_error(daemon, deadline=30, repo=REPO_ID)
    assert error.data["code"] == "hub_unreachable" and "offline" in error.error["message"]
    assert hub.requests == []
    daemon.call("load", model=MODEL_FILE)
    assert daemon.call("chat", **chat_params(max_tokens=2))["usage"]["completion_tokens"] >= 1


def test_refused_connection_fails_fast(start_daemon, models_dir: Path) -> None:
    # Bound but not listening: the port stays ours (a closed probe's port could be
    # taken by anyone meanwhile) and every connection to it is refused.
    with socket.socket() as reserved:
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        env = {"RKLLMD_HUB__ENDPOINT": f"http://127.0.0.1:{port}"}
        daemon = start_daemon(models_dir, env=env)
        error = pull_error(daemon, deadline=30, repo=REPO_ID)
    assert error.data["code"] == "hub_unreachable"


def test_silent_hub_times_out(start_daemon, models_dir: Path) -> None:
    with contextlib.closing(socket.socket()) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections in the kernel, never answers
        port = silent.getsockname()[1]
        env = {
            "RKLLMD_HUB__ENDPOINT": f"http://127.0.0.1:{port}",
            "RKLLMD_HUB__TIMEOUT_SECONDS": "2",
        }
        daemon = start_daemon(models_dir, env=env)
        error = pull_error(daemon, deadline=2 + 28, repo=REPO_ID)
        assert error.data["code"] == "hub_unreachable"


def test_sigterm_during_a_pull_stops_cleanly_and_keeps_the_part(
    start_daemon, models_dir: Path, smol_repo: Repo, hub: HubStub
) -> None:
    # 10 MiB/s: SIGTERM has ~8 s to stop the pull before the file would be complete.
    smol_repo.faults[GGUF] = Fault(rate=10 * MiB)
    daemon = start_daemon(models_dir, env=hub_env(hub))
    client = daemon.client()
    client.start("pull", repo=REPO_ID, progress=True)
    part = _wait_for_part(models_dir, 10 * MiB)
    assert daemon.stop(timeout=20) == 0  # past 20 s it is SIGKILLed: a non-zero status
    assert part.exists() and part.stat().st_size >= 10 * MiB  # resumable
    assert not (models_dir / "test-org").exists()
