"""Fixtures of the dialect tests: the NPU double's (for seed documents that name .rkllm
models), and one real daemon with SmolLM2 that the official-client tests share (each
start costs a model load)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.backends.conftest import call_log, npu_daemon, npu_models
from tests.helpers import DaemonProcess, place_model, running_daemon, short_tempdir

__all__ = ["call_log", "npu_daemon", "npu_models", "shared_daemon"]


@pytest.fixture(scope="package")
def shared_daemon() -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    with running_daemon(models, args=["--load", "smollm2"]) as started:
        yield started
    shutil.rmtree(models.parent, ignore_errors=True)
