"""The RKLLM model manager document (../shared/seeds/004_*), its operations run as
written against a real daemon pulling from the local Hub stand-in: downloadModel with
the document's repositories and file names, the directory layout it shows, listModels
and getModel (here the HTTP cards, which carry what the pulled meta.json and
config.json say), removeModel('TinyLlama') and cleanModels (HTTP DELETE and clean)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import requests

from tests.helpers import DaemonProcess
from tests.store.conftest import pull
from tests.store.hubstub import HubStub

QWEN_REPO = "limcheekin/Qwen2.5-0.5B-Instruct-rk3588-1.1.4"
QWEN_FILE = "Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.rkllm"
TINY_REPO = "punchnox/Tinnyllama-1.1B-rk3588-rkllm-1.1.4"
TINY_FILE = "TinyLlama-1.1B-Chat-v1.0-rk3588-w8a8-opt-0-hybrid-ratio-0.5.rkllm"
TECHNICAL = (
    "config.json",
    "generation_config.json",
    "meta.json",
    "tokenizer_config.json",
    "tokenizer.json",
)


def technical(name: str, context: int) -> dict[str, bytes | Path]:
    config = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": context}
    return {
        "config.json": json.dumps(config).encode(),
        "generation_config.json": b'{"temperature": 0.7}',
        "meta.json": json.dumps({"name": name, "description": f"{name} for the RK3588"}).encode(),
        "tokenizer_config.json": b"{}",
        "tokenizer.json": b"{}",
        "README.md": b"# not fetched\n",
    }


def test_the_model_manager_operations(store_daemon: DaemonProcess, hub: HubStub) -> None:
    hub.add_repo(
        QWEN_REPO, {QWEN_FILE: os.urandom(64 * 1024), **technical("Qwen2.5 0.5B Instruct", 32768)}
    )
    hub.add_repo(TINY_REPO, {TINY_FILE: os.urandom(32 * 1024), **technical("TinyLlama", 2048)})
    base = store_daemon.http_url

    # downloadModel(repo, file): the model file plus its technical files.
    result, _ = pull(store_daemon, repo=QWEN_REPO, file=QWEN_FILE)
    assert {f["file"] for f in result["files"]} == {QWEN_FILE, *TECHNICAL}
    pull(store_daemon, repo=TINY_REPO, file=TINY_FILE)

    # The directory structure: models/<owner>/<repo>/ with everything together.
    root: Path = store_daemon.models_dir
    for repo, model in ((QWEN_REPO, QWEN_FILE), (TINY_REPO, TINY_FILE)):
        folder = root / repo
        assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == {
            model,
            *TECHNICAL,
        }

    # listModels: every model with what its files say.
    cards = {c["id"]: c for c in requests.get(f"{base}/v1/models").json()["data"]}
    qwen = cards[QWEN_FILE.removesuffix(".rkllm")]
    assert (qwen["name"], qwen["description"]) == (
        "Qwen2.5 0.5B Instruct",
        "Qwen2.5 0.5B Instruct for the RK3588",
    )
    assert qwen["contextLength"] == 32768 and qwen["type"] == "chat"
    assert qwen["format"] == "rkllm" and qwen["size_bytes"] == 64 * 1024
    listed = {m["id"]: m for m in store_daemon.call("list")["models"]}
    assert listed[qwen["id"]]["source"]["repo"] == QWEN_REPO
    assert listed[qwen["id"]]["platform"] == "RK3588"

    # getModel('Qwen2.5-0.5B-Instruct'): by name, as written.
    one = requests.get(f"{base}/v1/models/Qwen2.5-0.5B-Instruct")
    assert one.status_code == 200 and one.json()["id"] == qwen["id"]

    # removeModel('TinyLlama'): the model and all associated files.
    gone = requests.delete(f"{base}/v1/models/TinyLlama").json()
    assert gone["deleted"] is True and gone["id"] == TINY_FILE.removesuffix(".rkllm")
    assert {f.rsplit("/", 1)[-1] for f in gone["files"]} == {TINY_FILE, *TECHNICAL}
    assert not (root / "punchnox").exists()

    # cleanModels(): everything downloaded goes.
    cleaned = requests.post(f"{base}/v1/models/clean", json={}).json()
    assert cleaned["removed"] == [qwen["id"]] and cleaned["count"] == 1
    assert requests.get(f"{base}/v1/models").json()["data"] == []
    assert {p.name for p in root.iterdir()} <= {".staging"}
