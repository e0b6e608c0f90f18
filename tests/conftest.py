"""Fixtures every test directory shares, and the fast tier's switch.

``make test-fast`` sets ``_RKLLMD_TEST_BACKEND=fake``: every worker (in-process
managers and daemon subprocesses inherit the environment) then hosts the
deterministic fake backend instead of llama.cpp. Tests that need the real model's
behaviour are marked ``real_model`` and skipped there; ``make test`` runs them all
on the real SmolLM2.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, place_model, short_tempdir

FAKE_BACKEND = os.environ.get("_RKLLMD_TEST_BACKEND") == "fake"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not FAKE_BACKEND:
        return
    skip = pytest.mark.skip(reason="needs the real model (fast tier runs the fake backend)")
    for item in items:
        if item.get_closest_marker("real_model"):
            item.add_marker(skip)


@pytest.fixture
def models_dir() -> Iterator[Path]:
    """An empty models dir on a short path."""
    path = short_tempdir() / "models"
    path.mkdir()
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def smol_dir(models_dir: Path) -> Path:
    """A models dir holding the real SmolLM2 GGUF."""
    place_model(models_dir)
    return models_dir


@pytest.fixture
def start_daemon() -> Iterator[object]:
    started: list[DaemonProcess] = []

    def start(models_dir: Path, **kwargs: object) -> DaemonProcess:
        daemon = DaemonProcess(models_dir, **kwargs)  # type: ignore[arg-type]
        started.append(daemon)
        return daemon.wait_ready()

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon(start_daemon, smol_dir: Path) -> DaemonProcess:  # type: ignore[no-untyped-def]
    """A real daemon with SmolLM2 loaded."""
    return start_daemon(smol_dir, args=["--load", "smollm2"])
