"""The RKLLM backend in-process on the librkllmrt double: the cancel window.

rkllm_run forgets an abort that arrived before it reset its abort state. A
generation cancelled before its run began never reaches the runtime; one cancelled
after that check but before the runtime's reset is aborted all the same."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.backends.base import GenerateResult
from rkllmd.backends.rkllm import abi as c
from rkllmd.backends.rkllm.backend import RkllmBackend
from rkllmd.backends.rkllm.native import Inbox
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

from tests.backends.conftest import CallLog
from tests.fixtures.build_double import double_library
from tests.helpers import wait_for


@pytest.fixture
def backend(
    npu_models: Path, call_log: CallLog, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RkllmBackend]:
    monkeypatch.setenv("RKLLM_DOUBLE_LOG", str(call_log.path))
    backend = RkllmBackend(BackendDefaults(library=str(double_library(13, "1.3.0", True))))
    backend.load(next(npu_models.glob("*.rkllm")), LoadOptions())
    yield backend
    backend.close()


def chat(text: str, max_tokens: int = 1024) -> GenerateRequest:
    return GenerateRequest(
        messages=(ChatMessage("user", text),), sampling=Sampling(max_tokens=max_tokens)
    )


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


def test_text_goes_out_from_another_thread_than_the_runtime_s(backend: RkllmBackend) -> None:
    # The double calls back on the thread that called rkllm_run, as the runtime may: the
    # UTF-8, stop-string and pipe work must not run there, the NPU waits for it.
    senders: set[int] = set()
    emitted: list[str] = []

    def emit(text: str) -> None:
        senders.add(threading.get_ident())
        emitted.append(text)

    result = backend.generate(chat("[[say:héllo there]]", 64), emit, threading.Event())
    assert result.finish_reason == "stop" and "".join(emitted) == "héllo there"
    assert senders and threading.get_ident() not in senders


def test_a_cancel_before_the_runtime_resets_its_abort_state_is_not_lost(
    backend: RkllmBackend, call_log: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The double holds each run between its start and its reset until an abort arrives,
    # which the reset then forgets: every cancel lands in the window.
    monkeypatch.setenv("RKLLM_DOUBLE_LATE_RESET", "1")
    monkeypatch.setenv("RKLLM_DOUBLE_TOKEN_DELAY_US", "1000")
    cancel = threading.Event()
    emitted: list[str] = []
    results: list[GenerateResult] = []
    worker = threading.Thread(
        target=lambda: results.append(
            backend.generate(chat("[[repeat:5000]]", 5000), emitted.append, cancel)
        )
    )
    worker.start()
    try:
        wait_for(lambda: call_log.calls("rkllm_run_begin"), 30, "the run to begin")
        cancel.set()
    finally:
        worker.join()
    assert results[0].finish_reason == "abort"
    aborts = call_log.calls("rkllm_abort")
    assert aborts[0]["running"] == 0  # the first abort came before the reset: lost
    # ... and one sent again once the run was under way stopped it before its end.
    (end,) = call_log.calls("rkllm_run_end")
    assert end["aborted"] == 1
    assert len("".join(emitted)) < len(" tok") * 5000


def test_an_abort_meant_for_an_ended_run_never_reaches_the_next(
    backend: RkllmBackend, call_log: CallLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing waits for the emit thread's or the cancel watcher's last abort when a run
    # ends (it would hold back the end of every reply): one that comes late must leave
    # the next run alone, and one for the run in progress must stop it.
    monkeypatch.setenv("RKLLM_DOUBLE_TOKEN_DELAY_US", "1000")
    model = backend._model
    assert model is not None
    native = model.native

    def run_in_thread(tokens: int, inbox: Inbox) -> threading.Thread:
        rk_input = model.make_input(f"[[repeat:{tokens}]]".encode(), None)
        infer = model.make_infer(c.INFER_GENERATE, Sampling(max_tokens=tokens), tokens)
        thread = threading.Thread(target=native.run, args=(rk_input, infer, inbox))
        thread.start()
        wait_for(lambda: len(inbox) >= 3, 30, "the run to be under way")
        return thread

    ended: Inbox = deque()
    current: Inbox = deque()
    thread = run_in_thread(100, current)
    native.abort_run(ended)
    thread.join()
    assert call_log.calls("rkllm_abort") == []
    assert sum(1 for item in current if item[0] == c.RUN_NORMAL) == 100

    stopped: Inbox = deque()
    thread = run_in_thread(5000, stopped)
    native.abort_run(stopped)
    thread.join()
    assert len(call_log.calls("rkllm_abort")) == 1
    (_, end) = call_log.calls("rkllm_run_end")
    assert end["aborted"] == 1 and len(stopped) < 5000
