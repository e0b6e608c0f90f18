"""Fixtures for the RKLLM backend: the C double, model files, daemons that use them."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.build_double import double_library, write_model
from tests.helpers import DaemonProcess, short_tempdir

MODEL_ID = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"


class CallLog:
    """The double's record of every call (one JSON object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[dict[str, Any]]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        # The double may be writing a line right now, and a reader can see part of it
        # (cut anywhere, even inside a UTF-8 character): only whole lines count.
        # Split on "\n" alone: str.splitlines() also splits on U+2028 and the like, which
        # the double writes unescaped inside JSON strings.
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.split(b"\n") if line]

    def calls(self, fn: str) -> list[dict[str, Any]]:
        return [c for c in self.all() if c["fn"] == fn]

    def runs(self, mode: int = 0) -> list[dict[str, Any]]:
        return [c for c in self.calls("rkllm_run") if c["mode"] == mode]

    def since(self, mark: int) -> list[dict[str, Any]]:
        return self.all()[mark:]

    def mark(self) -> int:
        return len(self.all())

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def npu_models() -> Iterator[Path]:
    """A models dir holding one .rkllm model file for the double."""
    path = short_tempdir() / "models"
    path.mkdir()
    write_model(path)
    yield path
    shutil.rmtree(path.parent, ignore_errors=True)


@pytest.fixture
def call_log(npu_models: Path) -> CallLog:
    return CallLog(npu_models.parent / "calls.jsonl")


NpuDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def npu_daemon(start_daemon: Any, npu_models: Path, call_log: CallLog) -> NpuDaemon:
    """Start a daemon serving ``npu_models`` through the double; env adds failure modes."""

    def start(
        *,
        abi: int = 13,
        version: str = "1.3.0",
        banner: bool = True,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        load: bool = True,
    ) -> DaemonProcess:
        environment = {
            "RKLLMD_RKLLM__LIBRARY": str(double_library(abi, version, banner)),
            "RKLLM_DOUBLE_LOG": str(call_log.path),
            **(env or {}),
        }
        environment = {k: v for k, v in environment.items() if v}  # "" removes a default
        extra = ["--load", MODEL_ID] if load else []
        argv = [*extra, *(args or [])]
        daemon: DaemonProcess = start_daemon(npu_models, env=environment, args=argv)
        return daemon

    return start
