"""HF_ENDPOINT through a real daemon: it names the Hub when rkllmd's own setting does not.

Two Hub stand-ins tell the endpoints apart: each records the requests it received.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.conftest import GGUF, REPO_ID, StartDaemon, pull
from tests.store.hubstub import HubStub, Repo

STEM = GGUF.removesuffix(".gguf")


@pytest.fixture
def other_hub() -> Iterator[HubStub]:
    stub = HubStub().start()
    yield stub
    stub.stop()


def test_pull_goes_to_hf_endpoint_when_rkllmd_names_no_hub(
    start_daemon: StartDaemon, models_dir: Path, hub: HubStub, smol_repo: Repo
) -> None:
    env = {"HF_ENDPOINT": hub.url, "RKLLMD_HUB__MIN_FREE_BYTES": "0"}
    daemon = start_daemon(models_dir, env=env)
    result, _ = pull(daemon, repo=REPO_ID)
    assert result["models"] == [STEM] and result["commit"] == smol_repo.commit
    assert (models_dir / REPO_ID / GGUF).stat().st_size == smol_repo.files[GGUF].size
    assert hub.requests


def test_rkllmd_hub_endpoint_wins_over_hf_endpoint(
    start_daemon: StartDaemon, models_dir: Path, hub: HubStub, smol_repo: Repo, other_hub: HubStub
) -> None:
    env = {
        "HF_ENDPOINT": other_hub.url,
        "RKLLMD_HUB__ENDPOINT": hub.url,
        "RKLLMD_HUB__MIN_FREE_BYTES": "0",
    }
    daemon = start_daemon(models_dir, env=env)
    result, _ = pull(daemon, repo=REPO_ID)
    assert result["models"] == [STEM]
    assert hub.requests and other_hub.requests == []
