"""A running pull: its state, its throttled progress events, its followers.

The download threads only bump counters on a ``FileProgress``; a ticker on the event
loop samples them every ``TICK_S`` and sends an event when something moved. So a
transfer produces at most 1/TICK_S progress events per second whatever its speed,
plus one event per stage change.

Event (also the ``progress`` notification of RPC ``pull``)::

    {"job", "repo", "stage", "message", "fraction", "bytes", "total",
     "file", "file_bytes", "file_total", "file_index", "files_total",
     "rate" (bytes/s over the last seconds), "eta_s"}

``stage``: resolving, verifying, downloading, publishing, then one terminal event:
done (with ``result``), failed or cancelled (with ``error`` {code, message, ...}).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from ..errors import Aborted, RkllmdError
from .hub import Cancelled, RepoFile
from .staging import Plan
from .transfer import FileProgress

logger = logging.getLogger(__name__)

TICK_S = 0.25
TERMINAL = ("done", "failed", "cancelled")
_RATE_WINDOW_S = 5.0
_BACKLOG = 256


class _Follower:
    def __init__(self) -> None:
        self.items: deque[dict[str, Any]] = deque(maxlen=_BACKLOG)
        self.ready = asyncio.Event()

    def push(self, event: dict[str, Any]) -> None:
        self.items.append(event)
        self.ready.set()

    async def get(self) -> dict[str, Any]:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        return self.items.popleft()


class PullJob:
    def __init__(self, job_id: str, repo: str, request: Any) -> None:
        self.id = job_id
        self.repo = repo
        self.request = request
        self.cancel_event = threading.Event()  # seen by the pull's threads
        self.cancelled = asyncio.Event()  # ends the pull's awaits at once
        self.stage = "queued"
        self.message = ""
        self.task: asyncio.Task[None] | None = None
        self._followers: set[_Follower] = set()
        self._attached = 0
        self._last: dict[str, Any] | None = None
        self._result: dict[str, Any] | None = None
        self._error: RkllmdError | None = None
        self._finished = asyncio.Event()
        self._started = time.monotonic()
        self._total = 0  # bytes this pull brings into place (staged + to fetch)
        self._base = 0  # of those, bytes in finished files
        self._files_total = 0
        self._index = 0
        self._current: FileProgress | None = None
        self._fetched = 0  # bytes received over the network, finished files
        self._verified = 0
        self._samples: deque[tuple[float, int]] = deque()

    # --- driving -------------------------------------------------------------------

    def start(self, work: Coroutine[Any, Any, dict[str, Any]], on_done: Callable[[], None]) -> None:
        self.task = asyncio.create_task(self._run(work, on_done), name=f"pull-{self.id}")

    async def _run(
        self, work: Coroutine[Any, Any, dict[str, Any]], on_done: Callable[[], None]
    ) -> None:
        ticker = asyncio.create_task(self._tick())
        try:
            result = await work
            self._result = result
            self._finish("done", f"pulled {self.repo}", result=result)
        except Aborted as exc:
            self._error = exc
            self._finish("cancelled", exc.message, error=exc)
        except RkllmdError as exc:
            self._error = exc
            self._finish("failed", exc.message, error=exc)
        except Exception:
            logger.exception("pull of %s failed", self.repo)
            self._error = RkllmdError("internal error during the pull")
            self._finish("failed", self._error.message, error=self._error)
        finally:
            ticker.cancel()
            on_done()

    def cancel(self) -> None:
        self.cancel_event.set()
        self.cancelled.set()

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled("the pull was cancelled")

    def attach(self) -> None:
        self._attached += 1

    def detach(self) -> None:
        """The last caller leaving an unfinished job cancels it (client went away)."""
        self._attached -= 1
        if self._attached <= 0 and not self._finished.is_set():
            logger.info("pull of %s: no one is following it any more; cancelling", self.repo)
            self.cancel()

    # --- following -----------------------------------------------------------------

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The latest event, then every new one; ends after the terminal event."""
        follower = _Follower()
        self._followers.add(follower)
        try:
            if self._last is not None:
                follower.push(self._last)
            while True:
                event = await follower.get()
                yield event
                if event["stage"] in TERMINAL:
                    return
        finally:
            self._followers.discard(follower)

    async def result(self) -> dict[str, Any]:
        await self._finished.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def snapshot(self) -> dict[str, Any]:
        return self._last if self._last is not None else self._event()

    # --- progress, called by the store ---------------------------------------------

    def set_stage(self, stage: str, message: str) -> None:
        self.stage, self.message = stage, message
        self._broadcast(self._event())

    def set_plan(self, plan: Plan) -> None:
        self._total = sum(f.size for f in plan.fetch + plan.ready)
        self._base = sum(f.size for f in plan.ready)
        self._files_total = len(plan.fetch)

    def on_verify(self, path: str, nbytes: int) -> None:  # from a worker thread
        self._verified += nbytes
        self.check_cancelled()  # hashing a big file in place stops with the pull

    def begin_file(self, f: RepoFile) -> FileProgress:
        self._index += 1
        self._current = FileProgress(f.path, f.size)
        self.message = f"{f.path} ({self._index}/{self._files_total})"
        return self._current

    def end_file(self, f: RepoFile) -> None:
        if self._current is not None:
            self._fetched += self._current.fetched
        self._base += f.size
        self._current = None

    def summary(self, plan: Plan, ids: list[str]) -> dict[str, Any]:
        listing = plan.listing
        files = [
            {
                "file": f.path,
                "size_bytes": f.size,
                "status": "present" if f in plan.present else "downloaded",
            }
            for f in plan.selection.files
        ]
        return {
            "id": ids[0] if ids else None,
            "models": ids,
            "repo": listing.repo,
            "revision": listing.revision,
            "commit": listing.commit,
            "folder": listing.repo,
            "files": files,
            "downloaded_bytes": self._fetched,
            "elapsed_s": round(time.monotonic() - self._started, 3),
            "job": self.id,
        }

    # --- events --------------------------------------------------------------------

    def _event(self) -> dict[str, Any]:
        cur = self._current
        done = self._base + (cur.done if cur else 0)
        rate = self._rate()
        left = self._total - done
        verifying = self.stage == "verifying"
        return {
            "job": self.id,
            "repo": self.repo,
            "stage": self.stage,
            "message": self.message,
            "fraction": round(done / self._total, 4) if self._total and not verifying else None,
            "bytes": self._verified if verifying else done,
            "total": None if verifying else self._total,
            "file": cur.path if cur else None,
            "file_bytes": cur.done if cur else None,
            "file_total": cur.total if cur else None,
            "file_index": self._index if cur else None,
            "files_total": self._files_total,
            "rate": round(rate) if rate is not None else None,
            "eta_s": round(left / rate, 1) if rate and left > 0 else None,
        }

    def _rate(self) -> float | None:
        now = time.monotonic()
        fetched = self._fetched + (self._current.fetched if self._current else 0)
        self._samples.append((now, fetched))
        while self._samples and now - self._samples[0][0] > _RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_b = self._samples[0]
        return (fetched - first_b) / (now - first_t) if now - first_t >= 0.5 else None

    async def _tick(self) -> None:
        moved: tuple[Any, ...] = ()
        while True:
            await asyncio.sleep(TICK_S)
            if self.stage not in ("downloading", "verifying"):
                continue
            event = self._event()
            key = (event["stage"], event["file"], event["bytes"])
            if key != moved:
                moved = key
                self._broadcast(event)

    def _broadcast(self, event: dict[str, Any]) -> None:
        self._last = event
        for follower in list(self._followers):
            follower.push(event)

    def _log_outcome(self, stage: str, message: str) -> None:
        took = time.monotonic() - self._started
        if stage == "done":
            logger.info(
                "pull of %s done in %.1f s (%d bytes fetched)", self.repo, took, self._fetched
            )
        else:
            logger.warning("pull of %s %s after %.1f s: %s", self.repo, stage, took, message)

    def _finish(
        self, stage: str, message: str, *, result: Any = None, error: RkllmdError | None = None
    ) -> None:
        self._log_outcome(stage, message)
        self.stage, self.message, self._current = stage, message, None
        event = self._event()
        if stage == "done":
            event.update(fraction=1.0, bytes=self._total, eta_s=None, result=result)
        if error is not None:
            event["error"] = {"message": error.message, **error.to_data()}
        self._broadcast(event)
        self._finished.set()
