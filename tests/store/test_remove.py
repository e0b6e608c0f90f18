"""RPC ``remove``: what goes with a model, the resident model, and never anything else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import (
    MODEL_FILE,
    MODEL_ID,
    DaemonProcess,
    RpcError,
    place_model,
    short_tempdir,
    wait_for,
)
from tests.store.conftest import GGUF, REPO_ID, hub_env, pull, tree
from tests.store.hubstub import Fault, HubStub, Repo

STEM = GGUF.removesuffix(".gguf")


def remove_error(daemon: DaemonProcess, **params: object) -> RpcError:
    with pytest.raises(RpcError) as err:
        daemon.call("remove", **params)
    return err.value


def test_pulled_model_goes_with_its_files(store_daemon: DaemonProcess, smol_repo: Repo) -> None:
    pull(store_daemon, repo=REPO_ID)
    (store_daemon.models_dir / REPO_ID / f"{STEM}.rkllmd.json").write_text('{"name": "x"}')
    result = store_daemon.call("remove", model=STEM)
    assert result["id"] == STEM and result["removed"] == [STEM]
    assert set(result["files"]) == {
        f"{REPO_ID}/{GGUF}",
        f"{REPO_ID}/config.json",
        f"{REPO_ID}/tokenizer_config.json",
        f"{REPO_ID}/{STEM}.rkllmd.json",
    }
    assert tree(store_daemon.models_dir) == {".staging"}
    assert store_daemon.call("list")["models"] == []


def test_shared_technical_files_stay_while_a_model_needs_them(
    store_daemon: DaemonProcess, hub: HubStub
) -> None:
    hub.add_repo(
        "org/two",
        {
            "a.gguf": b"GGUF" + os.urandom(5000),
            "b.gguf": b"GGUF" + os.urandom(5000),
            "config.json": b"{}",
            "user-notes.txt": b"",
        },
    )
    store_daemon.call("pull", repo="org/two", file="a.gguf")
    store_daemon.call("pull", repo="org/two", file="b.gguf")
    folder = store_daemon.models_dir / "org" / "two"
    (folder / "mine.txt").write_text("a file the user put there")

    store_daemon.call("remove", model="a")
    assert {p.name for p in folder.iterdir()} == {
        "b.gguf",
        "config.json",
        "mine.txt",
        ".rkllmd-pull.json",
    }
    store_daemon.call("remove", model="b")
    assert {p.name for p in folder.iterdir()} == {"mine.txt"}  # the user's file stays


def test_resident_model_needs_force(start_daemon, smol_dir: Path) -> None:
    daemon = start_daemon(smol_dir, args=["--load", MODEL_ID])
    error = remove_error(daemon, model=MODEL_ID)
    assert error.code == -32013 and error.data == {"code": "model_in_use", "model": MODEL_ID}
    assert (smol_dir / MODEL_FILE).exists()
    assert daemon.call("status")["state"] == "ready"

    assert daemon.call("remove", model=MODEL_ID, force=True)["removed"] == [MODEL_ID]
    assert not (smol_dir / MODEL_FILE).exists()
    assert daemon.call("status")["state"] == "idle"


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/../..", "x/../../y", "../x", "/etc", "/etc/passwd", "a\0b", "a\nb"]
)
def test_names_that_could_escape_are_invalid_params(
    start_daemon, smol_dir: Path, name: str
) -> None:
    sentinel = smol_dir.parent / "sentinel.gguf"
    sentinel.write_bytes(b"GGUF")
    daemon = start_daemon(smol_dir)
    before = tree(smol_dir.parent)
    error = remove_error(daemon, model=name)
    assert error.code == -32602
    assert tree(smol_dir.parent) == before


def test_symlink_leading_out_is_refused(start_daemon, smol_dir: Path) -> None:
    outside = short_tempdir()
    target = outside / "evil.gguf"
    target.write_bytes(b"GGUF" + b"\0" * 100)
    (smol_dir / "evil.gguf").symlink_to(target)
    daemon = start_daemon(smol_dir)
    error = remove_error(daemon, model="evil")
    assert error.code == -32602 and error.data["code"] == "invalid_model_name"
    assert target.exists() and (smol_dir / "evil.gguf").is_symlink()


def test_symlink_inside_is_removed_not_its_target(start_daemon, smol_dir: Path) -> None:
    (smol_dir / "alias.gguf").symlink_to(smol_dir / MODEL_FILE)
    daemon = start_daemon(smol_dir)
    daemon.call("remove", model="alias")
    assert not (smol_dir / "alias.gguf").exists() and (smol_dir / MODEL_FILE).exists()


def test_remove_all(start_daemon, models_dir: Path, hub: HubStub, smol_repo: Repo) -> None:
    place_model(models_dir)
    (models_dir / "sub").mkdir()
    place_model(models_dir / "sub", "other.gguf")
    daemon = start_daemon(models_dir, env=hub_env(hub), args=["--load", MODEL_ID])
    pull(daemon, repo=REPO_ID)
    stale = models_dir / ".staging" / "0123456789abcdef"
    stale.mkdir()
    (stale / "job.json").write_text('{"repo": "a/b", "files": []}')

    listed = sorted(m["id"] for m in daemon.call("list")["models"])
    assert len(listed) == 3
    assert remove_error(daemon, all=True).data["code"] == "model_in_use"
    result = daemon.call("remove", all=True, force=True)
    assert sorted(result["removed"]) == listed
    assert tree(models_dir) == set()
    assert daemon.call("status")["state"] == "idle"


@pytest.mark.parametrize("params", [{}, {"model": "x", "all": True}, {"all": False}])
def test_remove_needs_exactly_one_target(start_daemon, smol_dir: Path, params: dict) -> None:
    daemon = start_daemon(smol_dir)
    assert remove_error(daemon, **params).code == -32602
    assert (smol_dir / MODEL_FILE).exists()


def test_no_remove_while_the_repo_is_being_pulled(
    store_daemon: DaemonProcess, hub: HubStub
) -> None:
    repo = hub.add_repo(
        "org/two", {"a.gguf": b"GGUF" + os.urandom(5000), "b.gguf": b"GGUF" + os.urandom(8 << 20)}
    )
    store_daemon.call("pull", repo="org/two", file="a.gguf")
    repo.faults["b.gguf"] = Fault(rate=1 << 19)  # 16 s: still running for both checks
    client = store_daemon.client()
    client.start("pull", repo="org/two", file="b.gguf", progress=True)

    def downloading() -> bool:
        return any(
            d.get("stage") == "downloading" for d in store_daemon.call("list").get("pulls", [])
        )

    wait_for(downloading, 30, "the pull to start")
    assert remove_error(store_daemon, model="a").data["code"] == "model_in_use"
    assert remove_error(store_daemon, all=True).data["code"] == "model_in_use"
    client.close()


def test_a_pinned_model_needs_force(start_daemon, models_dir: Path) -> None:  # type: ignore[no-untyped-def]
    place_model(models_dir)
    daemon = start_daemon(models_dir, env={"RKLLMD_GENERATION__PIN": "smollm2"})
    error = remove_error(daemon, model="smollm2")
    assert error.code == -32014 and error.data["code"] == "model_pinned"
    assert error.data["pinned"] == MODEL_ID
    assert remove_error(daemon, all=True).data["code"] == "model_pinned"
    assert daemon.call("remove", model="smollm2", force=True)["removed"] == [MODEL_ID]
