"""Pull through a real daemon from the local Hub stand-in with the real huggingface_hub."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from tests.helpers import RpcError, chat_params, model_source
from tests.store.conftest import GGUF, REPO_ID, hub_env, pull, tree
from tests.store.hubstub import HubStub, Repo, new_commit

MANIFEST = ".rkllmd-pull.json"
STEM = GGUF.removesuffix(".gguf")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_publishes_a_loadable_model_with_metadata(store_daemon, smol_repo: Repo) -> None:
    result, events = pull(store_daemon, repo=REPO_ID)

    assert result["id"] == STEM and result["models"] == [STEM]
    assert result["commit"] == smol_repo.commit and result["revision"] == "main"
    assert {f["file"]: f["status"] for f in result["files"]} == {
        "config.json": "downloaded",
        "tokenizer_config.json": "downloaded",
        GGUF: "downloaded",
    }
    folder = store_daemon.models_dir / REPO_ID
    assert sha256(folder / GGUF) == sha256(model_source())
    assert not (folder / "README.md").exists() and not (folder / ".gitattributes").exists()
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["pending"] == [] and manifest["repo"] == REPO_ID
    assert manifest["models"][GGUF]["files"] == ["config.json", "tokenizer_config.json"]
    assert not list((store_daemon.models_dir / ".staging").iterdir())

    stages = [e["stage"] for e in events]
    assert stages[0] == "resolving" and "downloading" in stages and stages[-1] == "publishing"
    moving = [e for e in events if e["stage"] == "downloading" and e["file"]]
    assert all(e["total"] == result["downloaded_bytes"] for e in moving)
    assert all(0 <= e["fraction"] <= 1 and e["bytes"] <= e["total"] for e in moving)

    listed = {m["id"]: m for m in store_daemon.call("list")["models"]}
    model = listed[STEM]
    assert model["type"] == "chat" and model["context_length"] == 8192
    assert model["source"]["repo"] == REPO_ID and model["source"]["commit"] == smol_repo.commit
    assert model["source"]["pulled_at"].endswith("Z")

    store_daemon.call("load", model=STEM)
    reply = store_daemon.call("chat", **chat_params(max_tokens=4))
    assert reply["model"] == STEM and reply["usage"]["completion_tokens"] >= 1


def test_second_pull_downloads_nothing(store_daemon, smol_repo: Repo, hub: HubStub) -> None:
    pull(store_daemon, repo=REPO_ID)
    gets = len(hub.gets())
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert len(hub.gets()) == gets
    assert result["downloaded_bytes"] == 0
    assert {f["status"] for f in result["files"]} == {"present"}

    # A file replaced behind our back (same size, other bytes) is hashed and fetched again.
    target = store_daemon.models_dir / REPO_ID / "config.json"
    target.write_bytes(b"x" * target.stat().st_size)
    result, _ = pull(store_daemon, repo=REPO_ID)
    assert [f["file"] for f in result["files"] if f["status"] == "downloaded"] == ["config.json"]
    assert json.loads(target.read_text())["max_position_embeddings"] == 8192


@pytest.fixture
def two_models(hub: HubStub) -> Repo:
    return hub.add_repo(
        "org/multi",
        {
            "big.Q8_0.gguf": b"GGUF" + os.urandom(300_000),
            "sub/small.Q4_0.gguf": b"GGUF" + os.urandom(200_000),
            "config.json": b"{}",
            "sub/config.json": b'{"max_position_embeddings": 2048}',
            "notes.md": b"notes",
        },
    )


def test_several_model_files_ask_for_a_choice(store_daemon, two_models: Repo, hub: HubStub) -> None:
    with pytest.raises(RpcError) as err:
        store_daemon.call("pull", repo="org/multi")
    assert err.value.data["code"] == "choose_file"
    assert {c["file"] for c in err.value.data["candidates"]} == {
        "big.Q8_0.gguf",
        "sub/small.Q4_0.gguf",
    }
    assert hub.gets() == [] and not (store_daemon.models_dir / "org").exists()

    result = store_daemon.call("pull", repo="org/multi", file="small.Q4_0.gguf")
    assert result["models"] == ["small.Q4_0"]
    assert {f["file"] for f in result["files"]} == {
        "config.json",
        "sub/config.json",
        "sub/small.Q4_0.gguf",
    }
    shown = store_daemon.call("show", model="small.Q4_0")
    assert shown["context_length"] == 2048 and shown["file"] == "org/multi/sub/small.Q4_0.gguf"


def test_include_and_exclude(store_daemon, two_models: Repo) -> None:
    result = store_daemon.call(
        "pull", repo="org/multi", include=["*.gguf", "*.md"], exclude=["sub/", "config.json"]
    )
    assert {f["file"] for f in result["files"]} == {"big.Q8_0.gguf", "notes.md"}
    assert result["models"] == ["big.Q8_0"]
    with pytest.raises(RpcError) as err:
        store_daemon.call("pull", repo="org/multi", include=["*.rkllm"])
    assert err.value.data["code"] == "model_not_found"


def test_revision(store_daemon, smol_repo: Repo) -> None:
    smol_repo.branches["v1.0"] = new_commit()
    result = store_daemon.call("pull", repo=REPO_ID, revision="v1.0")
    assert result["commit"] == smol_repo.branches["v1.0"] and result["revision"] == "v1.0"
    assert store_daemon.call("show", model=STEM)["source"]["revision"] == "v1.0"
    with pytest.raises(RpcError) as err:
        store_daemon.call("pull", repo=REPO_ID, revision="nope")
    assert err.value.data["code"] == "repo_not_found"


@pytest.mark.parametrize(
    "repo", ["a", "a/b/c", "../x", "a/..", "/abs/x", "a/b\nc", "a--b/c", "a/b c", "-a/b"]
)
def test_invalid_repo_ids_are_rejected(store_daemon, hub: HubStub, repo: str) -> None:
    with pytest.raises(RpcError) as err:
        store_daemon.call("pull", repo=repo)
    assert err.value.code == -32602
    assert hub.requests == []


def test_unknown_repo(store_daemon) -> None:
    with pytest.raises(RpcError) as err:
        store_daemon.call("pull", repo="org/missing")
    assert err.value.code == -32012 and err.value.data["code"] == "repo_not_found"


def test_private_repo_needs_the_token_file(start_daemon, models_dir: Path, hub: HubStub) -> None:
    repo = hub.add_repo("org/private", {"m.gguf": b"GGUF" + os.urandom(50_000)})
    repo.token = "hf_secret"
    token_file = models_dir.parent / "token"
    token_file.write_text("hf_secret\n")
    token_file.chmod(0o600)

    anonymous = start_daemon(models_dir, env=hub_env(hub))
    with pytest.raises(RpcError) as err:
        anonymous.call("pull", repo="org/private")
    assert err.value.data["code"] == "repo_not_found"
    assert "hf_secret" not in anonymous.log()
    anonymous.stop()

    daemon = start_daemon(models_dir, env=hub_env(hub, token_file=str(token_file)))
    assert daemon.call("pull", repo="org/private")["models"] == ["m"]
    token_file.chmod(0o644)
    with pytest.raises(RpcError) as err:
        daemon.call("pull", repo="org/private")
    assert (
        err.value.data["code"] == "hub_unauthorized" and "chmod 600" in err.value.error["message"]
    )
    assert "hf_secret" not in daemon.log()


def test_sidecar_metadata_wins_and_aliases_resolve(store_daemon, smol_repo: Repo) -> None:
    pull(store_daemon, repo=REPO_ID)
    sidecar = store_daemon.models_dir / REPO_ID / f"{STEM}.rkllmd.json"
    sidecar.write_text(
        json.dumps(
            {
                "name": "Smol 135M",
                "description": "tiny test model",
                "type": "chat",
                "context_length": 2048,
                "aliases": ["tiny", "smol-test"],
                "sampling": {"temperature": 0.2},
            }
        )
    )
    store_daemon.call("rescan")
    shown = store_daemon.call("show", model="tiny")
    assert shown["id"] == STEM and shown["name"] == "Smol 135M"
    # The sidecar names the model; its context comes from the GGUF header, trusted more.
    assert shown["context_length"] == 8192 and shown["aliases"] == ["tiny", "smol-test"]
    assert shown["sampling"] == {"temperature": 0.2}
    assert shown["source"]["repo"] == REPO_ID
    assert store_daemon.call("load", model="SMOL-TEST")["model"] == STEM


def test_layout_has_no_leftovers(store_daemon, smol_repo: Repo) -> None:
    pull(store_daemon, repo=REPO_ID)
    assert tree(store_daemon.models_dir) == {
        ".staging",
        "test-org",
        REPO_ID,
        f"{REPO_ID}/{GGUF}",
        f"{REPO_ID}/config.json",
        f"{REPO_ID}/tokenizer_config.json",
        f"{REPO_ID}/{MANIFEST}",
    }


def test_technical_files_with_the_same_bytes_are_all_published(store_daemon, hub: HubStub) -> None:
    # Staged files are named by content: two "{}" files share one staged file.
    hub.add_repo(
        "org/twins",
        {"m.gguf": b"GGUF" + os.urandom(5000), "tokenizer.json": b"{}", "config.json": b"{}"},
    )
    result = store_daemon.call("pull", repo="org/twins")
    assert result["models"] == ["m"]
    folder = store_daemon.models_dir / "org" / "twins"
    assert (
        (folder / "tokenizer.json").read_bytes() == (folder / "config.json").read_bytes() == b"{}"
    )
