"""The RKLLM backend in-process on the librkllmrt double: a generation cancelled
before its run began never reaches the runtime (an rkllm_abort sent before
rkllm_run resets its state could be lost, and the worker killed for it)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.backends.base import ChatMessage, GenerateRequest, LoadOptions
from rkllmd.backends.rkllm.backend import RkllmBackend

from tests.backends.conftest import CallLog
from tests.fixtures.build_double import double_library


@pytest.fixture
def backend(
    npu_models: Path, call_log: CallLog, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RkllmBackend]:
    monkeypatch.setenv("RKLLM_DOUBLE_LOG", str(call_log.path))
    backend = RkllmBackend(LoadOptions(library=str(double_library(13, "1.3.0", True))))
    backend.load(next(npu_models.glob("*.rkllm")), LoadOptions())
    yield backend
    backend.close()


def chat(text: str) -> GenerateRequest:
    return GenerateRequest(messages=(ChatMessage("user", text),))


def test_cancelled_before_the_run_never_reaches_the_runtime(
    backend: RkllmBackend, call_log: CallLog
) -> None:
    cancel = threading.Event()
    cancel.set()
    emitted: list[str] = []
    result = backend.generate(chat("[[say:never]]"), emitted.append, cancel)
    assert result.finish_reason == "abort" and not emitted
    assert call_log.runs() == [] and call_log.calls("rkllm_abort") == []
    # The next request runs normally.
    result = backend.generate(chat("[[say:after]]"), emitted.append, threading.Event())
    assert result.finish_reason == "stop" and "".join(emitted) == "after"
    assert len(call_log.runs()) == 1
