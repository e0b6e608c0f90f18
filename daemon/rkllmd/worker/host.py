"""The worker process: hosts one backend and runs its jobs, each in its own thread.

The main thread reads commands so that ``abort`` is seen while generations run.
A backend declares how many generations it runs at once (``slots`` in its
props); the daemon never sends more, so the host just starts a thread per job.

The event pipe is a private duplicate of stdout; fd 1 itself is pointed at
stderr so that native libraries printing to stdout cannot corrupt the protocol.
"""

from __future__ import annotations

import ctypes
import logging
import os
import resource
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from ..backends.base import Backend
from ..errors import LoadFailed, NotAvailable, RkllmdError
from ..requests import (
    BackendDefaults,
    EmbedItem,
    GenerateRequest,
    LoadOptions,
    TokenLogprob,
    embed_item_from_json,
)
from . import protocol as p
from .modelfile import PinnedModel, pin

logger = logging.getLogger("rkllmd.worker")


class EventPipe:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, kind: str, **fields: Any) -> None:
        data = p.encode(kind, **fields)
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


# Test-only: the fast test tier runs every transport over a deterministic fake.
TEST_BACKEND_ENV = "_RKLLMD_TEST_BACKEND"


def make_backend(fmt: str, defaults: BackendDefaults) -> Backend:
    if os.environ.get(TEST_BACKEND_ENV) == "fake":
        from ..backends.fake import FakeBackend

        return FakeBackend(defaults)
    if fmt == "gguf":
        from ..backends.llamacpp import LlamaCppBackend

        return LlamaCppBackend(defaults)
    if fmt == "rkllm":
        from ..backends.rkllm import RkllmBackend

        return RkllmBackend(defaults)
    raise NotAvailable(f"no backend for the {fmt!r} format in this build")


class Host:
    def __init__(self, events: EventPipe) -> None:
        self._events = events
        self._backend: Backend | None = None
        self._jobs: dict[int, tuple[threading.Event, threading.Thread]] = {}
        self._jobs_lock = threading.Lock()
        self._pinned: PinnedModel | None = None

    def handle_load(self, message: dict[str, Any]) -> bool:
        try:
            defaults = BackendDefaults.from_dict(message.get("defaults") or {})
            backend = make_backend(str(message["format"]), defaults)
            path = Path(message["path"])
            if message.get("root"):  # the file the registry listed, opened the checked way
                self._pinned = pin(str(message["root"]), str(path))
                path = self._pinned.path
            props = backend.load(path, LoadOptions.from_dict(message["options"]))
        except RkllmdError as exc:
            self._events.send(
                p.LOAD_FAILED, code=exc.code, message=exc.message, details=exc.details
            )
            return False
        except Exception:
            logger.exception("unexpected failure while loading")
            self._events.send(
                p.LOAD_FAILED,
                code=LoadFailed.code,
                message="unexpected error while loading",
                details={},
            )
            return False
        self._backend = backend
        self._events.send(p.LOADED, props=props.to_dict())
        return True

    def handle_generate(self, message: dict[str, Any]) -> None:
        request = GenerateRequest.from_dict(message["request"])
        self._start(int(message["id"]), lambda job, cancel: self._generate(job, request, cancel))

    def handle_embed(self, message: dict[str, Any]) -> None:
        texts = [embed_item_from_json(t) for t in message["texts"]]
        self._start(int(message["id"]), lambda job, cancel: self._embed(job, texts))

    def _start(self, job_id: int, work: Callable[[int, threading.Event], None]) -> None:
        cancel = threading.Event()
        thread = threading.Thread(target=self._guarded, args=(job_id, work, cancel), daemon=True)
        with self._jobs_lock:
            self._jobs[job_id] = (cancel, thread)
        thread.start()

    def _guarded(
        self, job_id: int, work: Callable[[int, threading.Event], None], cancel: threading.Event
    ) -> None:
        try:
            work(job_id, cancel)
        except RkllmdError as exc:
            self._events.send(
                p.ERROR, id=job_id, code=exc.code, message=exc.message, details=exc.details
            )
        except Exception:
            logger.exception("job %d failed", job_id)
            self._events.send(
                p.ERROR, id=job_id, code="generation_failed", message="the backend failed"
            )
        finally:
            with self._jobs_lock:
                self._jobs.pop(job_id, None)

    def _generate(self, job_id: int, request: GenerateRequest, cancel: threading.Event) -> None:
        assert self._backend is not None
        send = self._events.send

        def emit(text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None) -> None:
            extra: dict[str, Any] = {}
            if index:
                extra["index"] = index
            if logprobs is not None:
                extra["logprobs"] = [entry.to_dict() for entry in logprobs]
            send(p.TOKEN, id=job_id, text=text, **extra)

        result = self._backend.generate(request, emit, cancel)
        extra: dict[str, Any] = {}
        if result.perf is not None:
            extra["perf"] = result.perf
        if result.choices:
            extra["choices"] = list(result.choices)
        send(
            p.DONE,
            id=job_id,
            finish_reason=result.finish_reason,
            usage=result.usage.to_dict(),
            **extra,
        )

    def _embed(self, job_id: int, texts: list[EmbedItem]) -> None:
        assert self._backend is not None
        result = self._backend.embed(texts)
        self._events.send(
            p.EMBEDDING, id=job_id, vectors=result.vectors, prompt_tokens=result.prompt_tokens
        )

    def handle_tokenize(self, message: dict[str, Any]) -> None:
        """Answered at once on this thread: tokenizing is quick and only reads the
        vocabulary, so it runs beside a generation without waiting for it."""
        job_id = int(message["id"])

        def work() -> None:
            assert self._backend is not None
            request = message.get("request")
            if request is not None:
                tokens = self._backend.encode_prompt(GenerateRequest.from_dict(request))
            else:
                add_bos, special = bool(message["add_bos"]), bool(message["special"])
                tokens = self._backend.encode(str(message["text"]), add_bos, special)
            self._events.send(p.TOKENS, id=job_id, tokens=tokens)

        self._inline(job_id, work)

    def handle_detokenize(self, message: dict[str, Any]) -> None:
        job_id = int(message["id"])

        def work() -> None:
            assert self._backend is not None
            tokens = [int(t) for t in message["tokens"]]
            text = self._backend.decode(tokens, bool(message["special"]))
            self._events.send(p.TEXT, id=job_id, text=text)

        self._inline(job_id, work)

    def _inline(self, job_id: int, work: Callable[[], None]) -> None:
        self._guarded(job_id, lambda _job, _cancel: work(), threading.Event())

    def handle_abort(self, message: dict[str, Any]) -> None:
        with self._jobs_lock:
            job = self._jobs.get(int(message["id"]))
        if job is not None:
            job[0].set()

    def release_model_file(self) -> None:
        if self._pinned is not None:
            self._pinned.close()
            self._pinned = None

    def shutdown(self) -> None:
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for cancel, _ in jobs:
            cancel.set()
        for _, thread in jobs:
            thread.join()
        if self._backend is not None:
            self._backend.close()


def serve(commands: BinaryIO, events: EventPipe) -> int:
    host = Host(events)
    try:
        return _serve(host, commands)
    finally:
        host.release_model_file()


def _serve(host: Host, commands: BinaryIO) -> int:
    first = commands.readline()
    if not first or not host.handle_load(p.decode(first)):
        return 0
    handlers = {
        p.GENERATE: host.handle_generate,
        p.EMBED: host.handle_embed,
        p.TOKENIZE: host.handle_tokenize,
        p.DETOKENIZE: host.handle_detokenize,
        p.ABORT: host.handle_abort,
    }
    for line in commands:
        message = p.decode(line)
        if message["kind"] == p.SHUTDOWN:
            break
        handlers[message["kind"]](message)
    # EOF on stdin means the daemon is gone or wants us gone: either way, stop.
    host.shutdown()
    return 0


def _die_with_parent() -> None:
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _prepare_process() -> EventPipe:
    events = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    # The daemon alone decides when the worker ends (a Ctrl-C or a group-wide
    # SIGTERM must not kill it before the daemon has drained). If the daemon
    # dies, stdin reaches EOF, and PDEATHSIG covers a worker stuck in native code.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(
        level=os.environ.get("RKLLMD_WORKER_LOG_LEVEL", "INFO").upper(),
        format="rkllmd-worker[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    return EventPipe(events)


def main() -> None:
    events = _prepare_process()
    sys.exit(serve(sys.stdin.buffer, events))
