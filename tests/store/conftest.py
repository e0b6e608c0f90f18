from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, model_source
from tests.store.hubstub import HubStub, Repo

REPO_ID = "test-org/SmolLM2-135M-Instruct-GGUF"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONFIG = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 8192}
TOKENIZER_CONFIG = {"model_max_length": 8192, "chat_template": "{{ messages }}"}


@pytest.fixture
def hub() -> Iterator[HubStub]:
    stub = HubStub().start()
    yield stub
    stub.stop()


@pytest.fixture
def smol_repo(hub: HubStub) -> Repo:
    """A repo holding the real SmolLM2 GGUF, technical files and a README."""
    return hub.add_repo(
        REPO_ID,
        {
            GGUF: model_source(),
            "config.json": json.dumps(CONFIG).encode(),
            "tokenizer_config.json": json.dumps(TOKENIZER_CONFIG).encode(),
            "README.md": b"# SmolLM2\n",
            ".gitattributes": b"*.gguf filter=lfs\n",
        },
    )


def hub_env(hub: HubStub, **extra: str) -> dict[str, str]:
    env = {"RKLLMD_HUB__ENDPOINT": hub.url, "RKLLMD_HUB__MIN_FREE_BYTES": "0"}
    env.update({f"RKLLMD_HUB__{k.upper()}": v for k, v in extra.items()})
    return env


@pytest.fixture
def store_daemon(start_daemon: Any, models_dir: Path, hub: HubStub) -> DaemonProcess:
    """A real daemon on an empty models dir, pulling from the local Hub stand-in."""
    daemon: DaemonProcess = start_daemon(models_dir, env=hub_env(hub))
    return daemon


def pull(daemon: DaemonProcess, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """RPC pull with progress; returns the result and the progress notifications."""
    client = daemon.client(timeout=120)
    result = client.call("pull", progress=True, **params)
    events = [n["params"] for n in client.notifications if n.get("method") == "progress"]
    client.close()
    return result, events


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


StartDaemon = Callable[..., DaemonProcess]
