"""A group member renaming entries of the models dir while the daemon pulls and removes.

The models dir is writable by the ``rkllm`` group. Each test swaps a folder the daemon
is working in with a symlink to a folder outside, atomically and in a loop
(``tests/fsrace.py``), while the daemon pulls or removes, and then checks that
nothing outside was written or deleted. The loops are bounded in time; on the code
before the fd-based store they hit within a few rounds.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fsrace import Swapper
from tests.helpers import DaemonProcess, RpcError, wait_for
from tests.store.conftest import hub_env
from tests.store.hubstub import HubStub

BUDGET_S = 25.0  # per test: the race loop stops after this long (or at the first hit)
ROUNDS = 40
REMOVALS = 300


def tiny_model(seed: int) -> bytes:
    return b"GGUF\x03\x00\x00\x00" + hashlib.sha256(str(seed).encode()).digest() * 64


def outside_files(outside: Path) -> list[str]:
    return sorted(str(p.relative_to(outside)) for p in outside.rglob("*") if not p.is_dir())


def figures(name: str, **values: Any) -> None:
    print(json.dumps({"test": name, **values}))


@pytest.fixture
def outside(models_dir: Path) -> Path:
    path = models_dir.parent / "outside"
    path.mkdir()
    return path


def _pull(daemon: DaemonProcess, repo: str) -> str:
    client = daemon.client(timeout=60)
    try:
        client.call("pull", repo=repo)
        return "ok"
    except RpcError as exc:
        return str(exc.data.get("code"))
    finally:
        client.close()


def test_pull_never_writes_outside_when_a_folder_is_swapped_for_a_link(
    start_daemon: Any, models_dir: Path, outside: Path, hub: HubStub
) -> None:
    owner = models_dir / "race"
    owner.mkdir()
    link = models_dir / ".swap"
    link.symlink_to(outside)
    for i in range(ROUNDS):
        hub.add_repo(f"race/r{i}", {"m.gguf": tiny_model(i), "config.json": b"{}"})
        (outside / f"r{i}").mkdir()  # the attacker mirrors the layout outside
    daemon = start_daemon(models_dir, env=hub_env(hub))
    outcomes: list[str] = []
    deadline = time.monotonic() + BUDGET_S
    with Swapper(owner, link) as swapper:
        for i in range(ROUNDS):
            outcomes.append(_pull(daemon, f"race/r{i}"))
            if outside_files(outside) or time.monotonic() > deadline:
                break
    figures("pull_race", pulls=len(outcomes), swaps=swapper.swaps, outcomes=sorted(set(outcomes)))
    assert outside_files(outside) == []
    # A pull that met the link fails cleanly; none is an internal error.
    assert set(outcomes) <= {"ok", "pull_failed"}, outcomes
    assert daemon.call("status")["state"] in ("idle", "ready")


def test_remove_never_deletes_outside_when_a_folder_is_swapped_for_a_link(
    start_daemon: Any, models_dir: Path, outside: Path
) -> None:
    owner = models_dir / "race"
    owner.mkdir()
    past = time.time() - 3600
    for i in range(REMOVALS):
        for folder in (owner, outside):
            (folder / f"m{i}.gguf").write_bytes(tiny_model(i))
            os.utime(folder / f"m{i}.gguf", (past, past))
    link = models_dir / ".swap"
    link.symlink_to(outside)
    daemon = start_daemon(models_dir)
    assert len(daemon.call("list")["models"]) == REMOVALS
    outcomes: list[str] = []
    deadline = time.monotonic() + BUDGET_S
    with Swapper(owner, link) as swapper:
        i = 0
        while i < REMOVALS and time.monotonic() < deadline:
            try:
                daemon.call("remove", model=f"m{i}")
                outcomes.append("ok")
                i += 1
            except RpcError as exc:
                outcomes.append(str(exc.data.get("code")))
                daemon.call("rescan")  # a scan that met the link hid the models: again
            if len(outside_files(outside)) < REMOVALS:
                break
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    figures("remove_race", attempts=len(outcomes), swaps=swapper.swaps, outcomes=counts)
    assert len(outside_files(outside)) == REMOVALS  # every sentinel outside is still there
    assert set(outcomes) <= {"ok", "invalid_model_name", "model_not_found"}, outcomes


def test_staging_made_by_someone_else_is_replaced_and_nothing_outside_is_touched(
    start_daemon: Any, models_dir: Path, outside: Path, hub: HubStub
) -> None:
    repo = "race/staged"
    hub.add_repo(repo, {"m.gguf": tiny_model(1)})
    key = hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()[:16]
    staging = models_dir / ".staging"
    daemon = start_daemon(models_dir, env=hub_env(hub))
    # After the start-up cleanup: a member makes the staging folders, for everyone.
    (staging / key).mkdir(parents=True)
    for folder in (staging, staging / key):
        folder.chmod(0o777)
    (staging / ".swap").symlink_to(outside)
    (outside / "victim.txt").write_text("precious")
    (outside / "folder").mkdir()
    (outside / "folder" / "x").write_text("precious too")
    outcomes: list[str] = []
    deadline = time.monotonic() + BUDGET_S
    with Swapper(staging / key, staging / ".swap") as swapper:
        for _ in range(ROUNDS):
            outcomes.append(_pull(daemon, repo))
            if outcomes[-1] == "ok":
                daemon.call("remove", model="m")
            if outside_files(outside) != ["folder/x", "victim.txt"]:
                break
            if time.monotonic() > deadline:
                break
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    figures("staging_race", pulls=len(outcomes), swaps=swapper.swaps, outcomes=counts)
    assert outside_files(outside) == ["folder/x", "victim.txt"]  # nothing deleted, no part
    st = staging.lstat()
    assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
    assert "ok" in outcomes
    wait_for(lambda: "not the daemon's own folder" in daemon.log(), 5, "the replacement logged")
