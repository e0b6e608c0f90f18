from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, place_model, short_tempdir


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
