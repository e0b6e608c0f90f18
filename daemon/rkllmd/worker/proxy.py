"""Daemon-side handle of one worker process.

Owns the child, its two pipes and a reader task that routes events to the
waiting load or generation. When the child dies, every waiter gets
``BackendCrashed`` and the owner is told why, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import (
    Aborted,
    BackendCrashed,
    InvalidParams,
    LoadFailed,
    RkllmdError,
    error_from_code,
)
from ..props import ModelProps
from ..requests import (
    BackendDefaults,
    DoneEvent,
    EmbedItem,
    GenerateRequest,
    GenerationEvent,
    LoadOptions,
    TokenEvent,
    TokenLogprob,
    Usage,
)
from . import protocol as p

logger = logging.getLogger(__name__)


_CRASHED = object()
# A worker that used at least this share of one CPU over a grace period is computing
# (a prompt's evaluation), not stuck; a runtime waiting on nothing uses almost none.
_BUSY_SHARE = 0.2


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), None if unknown."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:  # noqa: PTH123 - procfs, tiny
            fields = handle.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _runnable(pid: int) -> bool:
    """Whether a thread of the process is running or waiting for a CPU (state R).

    On a loaded machine a computing worker may get less than ``_BUSY_SHARE`` of a
    CPU; it is still computing. A runtime stuck waiting on nothing sleeps (S)."""
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            if (task / "stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"R":
                return True
    except (OSError, IndexError):
        return False
    return False


ExitCallback = Callable[["WorkerProcess", str], None]


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"worker process killed by {name}"
    return f"worker process exited with status {returncode}"


_DAEMON_ONLY = (
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
)


def _child_env() -> dict[str, str]:
    # systemd's notify and activation variables belong to the daemon alone.
    env = {k: v for k, v in os.environ.items() if k not in _DAEMON_ONLY}
    env["RKLLMD_WORKER_LOG_LEVEL"] = logging.getLevelName(logging.getLogger().getEffectiveLevel())
    return env


class WorkerProcess:
    def __init__(self, proc: asyncio.subprocess.Process, on_exit: ExitCallback) -> None:
        self._proc = proc
        self._on_exit = on_exit
        self._loaded: asyncio.Future[ModelProps] = asyncio.get_running_loop().create_future()
        self._jobs: dict[int, asyncio.Queue[Any]] = {}
        self._ids = itertools.count(1)
        self._stopping = False
        self.exit_reason: str | None = None
        self._kill_reason: str | None = None
        self.last_activity = time.monotonic()
        self._reader = asyncio.create_task(self._read_events(), name=f"worker-{proc.pid}")

    @classmethod
    async def spawn(cls, on_exit: ExitCallback) -> WorkerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rkllmd.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=_child_env(),
            limit=p.MAX_LINE_BYTES,
        )
        logger.info("started worker pid %d", proc.pid)
        return cls(proc, on_exit)

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self.exit_reason is None

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    # --- commands ------------------------------------------------------------------

    async def _send(self, kind: str, **fields: Any) -> None:
        await self._write(p.encode(kind, **fields))

    async def _write(self, data: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        # The stuck check measures silence since the worker was last heard from or given
        # work: a generation after a long idle spell must not count the idle time.
        self.last_activity = time.monotonic()
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise BackendCrashed(self.exit_reason or "worker process is gone") from None

    async def load(
        self,
        path: Path,
        fmt: str,
        options: LoadOptions,
        defaults: BackendDefaults,
        deadline: float,
        root: Path | None = None,
    ) -> ModelProps:
        """``root``: the models dir ``path`` was listed in; the worker then opens the
        file below it without following links (worker/modelfile.py)."""
        await self._send(
            p.LOAD,
            path=str(path),
            root=str(root) if root is not None else None,
            format=fmt,
            options=options.to_dict(),
            defaults=defaults.to_dict(),
        )
        try:
            return await asyncio.wait_for(asyncio.shield(self._loaded), deadline)
        except TimeoutError:
            self.kill("loading timed out")
            raise LoadFailed(
                f"loading took longer than {deadline:.0f} s; the worker was stopped"
            ) from None

    async def generate(
        self, request: GenerateRequest, abort_grace: float
    ) -> AsyncGenerator[GenerationEvent, None]:
        job_id = next(self._ids)
        try:
            command = p.encode(p.GENERATE, id=job_id, request=request.to_dict())
        except (RecursionError, TypeError):  # the edges limit nesting: never reached
            raise InvalidParams("the request is nested too deeply") from None
        # Encoded before the job exists: a request that cannot be sent is refused,
        # and the worker is never asked to abort a job it never received.
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._jobs[job_id] = queue
        finished = False
        prefilled = False  # a first event came: the prompt has been evaluated
        try:
            await self._write(command)
            while True:
                event = self._unpack(await queue.get())
                prefilled = True
                # Set before yielding: a consumer may stop iterating at the final event.
                finished = isinstance(event, DoneEvent)
                yield event
                if finished:
                    return
        except RkllmdError:
            finished = True
            raise
        finally:
            if not finished:
                await self._abort(job_id, queue, abort_grace, prefilled)
            self._jobs.pop(job_id, None)

    async def embed(self, texts: Sequence[EmbedItem]) -> tuple[list[list[float]], int]:
        """Embeddings of ``texts`` (or token ids); short enough that it is never aborted."""
        job_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._jobs[job_id] = queue
        try:
            await self._send(p.EMBED, id=job_id, texts=list(texts))
            message = await queue.get()
            if message is not _CRASHED and message["kind"] == p.EMBEDDING:
                return message["vectors"], int(message["prompt_tokens"])
            self._unpack(message)  # raises the matching error
            raise BackendCrashed("the worker answered an embedding request with something else")
        finally:
            self._jobs.pop(job_id, None)

    async def tokenize(
        self, text: str | None, request: GenerateRequest | None, add_bos: bool, special: bool
    ) -> list[int]:
        """Token ids of ``text``, or of the prompt ``request`` renders to."""
        fields: dict[str, Any] = {"add_bos": add_bos, "special": special}
        if request is not None:
            fields["request"] = request.to_dict()
        else:
            fields["text"] = text
        reply = await self._ask(p.TOKENIZE, p.TOKENS, **fields)
        return [int(t) for t in reply["tokens"]]

    async def detokenize(self, tokens: list[int], special: bool) -> str:
        reply = await self._ask(p.DETOKENIZE, p.TEXT, tokens=tokens, special=special)
        return str(reply["text"])

    async def _ask(self, kind: str, answer: str, **fields: Any) -> dict[str, Any]:
        """One request and its one answer (an error event raises its error)."""
        job_id = next(self._ids)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._jobs[job_id] = queue
        try:
            await self._send(kind, id=job_id, **fields)
            message = await queue.get()
            if message is not _CRASHED and message["kind"] == answer:
                return dict(message)
            self._unpack(message)  # raises the matching error
            raise BackendCrashed(f"the worker answered a {kind} request with something else")
        finally:
            self._jobs.pop(job_id, None)

    def _unpack(self, message: Any) -> GenerationEvent:
        if message is _CRASHED:
            if self._stopping:
                raise Aborted("generation stopped: the model is being unloaded")
            raise BackendCrashed(self.exit_reason or "worker process died")
        kind = message["kind"]
        if kind == p.TOKEN:
            logprobs = message.get("logprobs")
            return TokenEvent(
                message["text"],
                int(message.get("index", 0)),
                None if logprobs is None else tuple(TokenLogprob.from_dict(e) for e in logprobs),
            )
        if kind == p.DONE:
            usage = Usage.from_dict(message["usage"])
            choices = tuple(message.get("choices") or ())
            return DoneEvent(message["finish_reason"], usage, message.get("perf"), choices)
        raise error_from_code(message["code"], message["message"], **(message.get("details") or {}))

    async def _abort(
        self, job_id: int, queue: asyncio.Queue[Any], grace: float, prefilled: bool
    ) -> None:
        """Stop a generation the consumer walked away from, and wait until it has.

        A backend sees an abort between steps. While it generates, a step is one token:
        past ``grace`` after the abort, tokens still coming mean the abort was ignored
        and the worker is killed. A prompt's evaluation is one step that can take far
        longer (a 2,048-token batch on a small CPU: tens of seconds), and killing a
        healthy worker for it unloads the model. So before the first event, the grace
        is renewed while the worker keeps computing (its CPU time advances): the wait
        ends with the step. A worker that is silent and idle for a whole grace (a
        runtime that ignores the abort and waits) is killed as before."""
        if not self.alive:
            return
        with contextlib.suppress(BackendCrashed):
            await self._send(p.ABORT, id=job_id)
        if not prefilled and not await self._evaluated(queue, grace):
            return
        try:
            async with asyncio.timeout(grace):
                while True:
                    message = await queue.get()
                    if message is _CRASHED or message["kind"] in (p.DONE, p.ERROR):
                        return
        except TimeoutError:
            await self._kill_after_abort(grace)

    async def _evaluated(self, queue: asyncio.Queue[Any], grace: float) -> bool:
        """Wait out a prompt's evaluation: True when it produced a token (the grace
        then applies), False when the job ended, or the worker was killed."""
        busy = _cpu_seconds(self.pid)
        while True:
            try:
                message = await asyncio.wait_for(queue.get(), grace)
            except TimeoutError:
                now = _cpu_seconds(self.pid)
                if busy is None or now is None or not self._computing(now - busy, grace):
                    await self._kill_after_abort(grace)
                    return False
                busy = now  # still evaluating the prompt: another grace
                continue
            ended = message is _CRASHED or message["kind"] in (p.DONE, p.ERROR)
            return not ended

    def _computing(self, cpu_seconds: float, grace: float) -> bool:
        return cpu_seconds >= grace * _BUSY_SHARE or _runnable(self.pid)

    async def _kill_after_abort(self, grace: float) -> None:
        logger.error("worker did not stop generating within %.1f s of abort; killing it", grace)
        self.kill("the worker did not stop after an abort")
        # The generation ends when this returns: by then the exit must be known, or the
        # model would read "ready" with a dead worker and take the next request.
        await asyncio.shield(self._reader)

    async def stop(self, grace: float) -> None:
        """Ask the worker to exit; kill it if it has not within ``grace`` seconds."""
        self._stopping = True
        if self.alive:
            with contextlib.suppress(BackendCrashed):
                await self._send(p.SHUTDOWN)
            try:
                await asyncio.wait_for(asyncio.shield(self._reader), grace)
            except TimeoutError:
                logger.warning(
                    "worker pid %d did not exit within %.1f s; killing it", self.pid, grace
                )
                self.kill()
        await self._reader

    def kill(self, reason: str | None = None) -> None:
        if reason and self._kill_reason is None:
            self._kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()

    # --- events --------------------------------------------------------------------

    async def _read_events(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                self.last_activity = time.monotonic()
                self._route(p.decode(line))
        except (ValueError, asyncio.LimitOverrunError):
            logger.exception("worker sent a malformed message; killing it")
            self.kill("the worker sent a malformed message")
        returncode = await self._proc.wait()
        self._finish(self._kill_reason or describe_exit(returncode))

    def _route(self, message: dict[str, Any]) -> None:
        kind = message["kind"]
        if kind == p.LOADED and not self._loaded.done():
            self._loaded.set_result(ModelProps.from_dict(message["props"]))
        elif kind == p.LOAD_FAILED and not self._loaded.done():
            error = error_from_code(
                message["code"], message["message"], **(message.get("details") or {})
            )
            self._loaded.set_exception(error)
        elif (queue := self._jobs.get(int(message.get("id", -1)))) is not None:
            queue.put_nowait(message)

    def _finish(self, reason: str) -> None:
        self.exit_reason = reason
        if not self._loaded.done():
            self._loaded.set_exception(LoadFailed(f"the model could not be loaded: {reason}"))
        for queue in self._jobs.values():
            queue.put_nowait(_CRASHED)
        log = logger.info if self._stopping else logger.error
        log("worker pid %d: %s", self.pid, reason)
        if not self._stopping:
            self._on_exit(self, reason)
