"""The model registry: which model files the models directory holds, and their ids.

Only files that have stopped changing are published, so a copy or download in
progress is never loadable. All filesystem access happens in a worker thread;
`entries` and `resolve` read an immutable in-memory snapshot and never do I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import watchfiles

from ..lanes import Lane
from . import scan
from .entries import ModelEntry, Snapshot, build_entries, rejected_keys, resolve
from .gguf import HeaderCache
from .scan import TEMP_SUFFIXES, Seen, Walk

logger = logging.getLogger(__name__)


_MTIME_SLACK = 2.0  # FAT rounds mtimes down by up to 2 s, so a fresh file can look old
_RECHECK_MARGIN = 0.02  # so the re-check lands after the settle window, not on its edge
_DEBOUNCE_MS = 300
_IDLE_YIELD_MS = 500  # awatch yields this often when idle, so due rescans can run
_MISSING_POLL = 1.0
_MAX_BACKOFF = 30.0


@dataclass(frozen=True, slots=True)
class _ScanResult:
    walk: Walk
    observed: dict[str, tuple[tuple[str, int, int], float]] = field(default_factory=dict)
    due: float | None = None
    snap: Snapshot | None = None  # None: the published set did not change
    rejected: frozenset[str] = frozenset()


class _WatchFilter:
    """Drops events under hidden folders and for temp files: they never change the set."""

    def __init__(self, root: str) -> None:
        self._prefix = root.rstrip("/") + "/"

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        rel = path[len(self._prefix) :] if path.startswith(self._prefix) else Path(path).name
        parts = rel.split("/")
        hidden = any(p.startswith(".") for p in parts)
        return not hidden and not parts[-1].lower().endswith(TEMP_SUFFIXES)


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


class ModelRegistry:
    """The published model set of one models directory."""

    def __init__(
        self, models_dir: Path, *, settle_seconds: float = 0.5, rescan_interval: float = 30.0
    ) -> None:
        self._dir = Path(models_dir)
        self._settle = settle_seconds
        self._rescan_interval = rescan_interval
        self._snap = Snapshot(())
        self._rejected: frozenset[str] = frozenset()
        # relpath -> ((realpath, size, mtime_ns), monotonic time that signature was first seen)
        self._observed: dict[str, tuple[tuple[str, int, int], float]] = {}
        self._listeners: list[Callable[[], None]] = []
        self._lock = asyncio.Lock()
        self._scans_started = 0
        self._last_finished = 0
        self._missing = False
        self._warned: frozenset[str] = frozenset()
        self._meta_warned: set[str] = set()  # only the scan thread touches it (one at a time)
        self._headers = HeaderCache()  # likewise
        self._recheck: asyncio.TimerHandle | None = None
        self._recheck_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._complete: set[str] = set()  # relpaths known whole: no settle wait
        self._unsettled = False  # some file was seen but is not stable yet
        self._lane = Lane("scan", 1)  # its own thread: slow pulls never delay a scan

    @property
    def models_dir(self) -> Path:
        return self._dir

    def entries(self) -> list[ModelEntry]:
        return list(self._snap.entries)

    def add_listener(self, fn: Callable[[], None]) -> None:
        self._listeners.append(fn)

    def resolve(self, name: str) -> ModelEntry:
        return resolve(self._snap, self._rejected, name)

    async def wait_settled(self, limit: float) -> None:
        """Rescan until no file is still settling (a copy that just finished), or ``limit`` s.

        Used before loading at start-up: a model written just before the daemon started
        must not be reported missing.
        """
        deadline = time.monotonic() + limit
        await self.scan()
        while self._unsettled and time.monotonic() < deadline:
            await asyncio.sleep(min(self._settle / 2, max(deadline - time.monotonic(), 0)))
            await self.scan()

    async def scan_complete(self, relpaths: Iterable[str]) -> None:
        """Scan now; these files were moved in whole (a pull), so skip their settle wait."""
        added = set(relpaths) - self._complete
        self._complete |= added
        try:
            await self.scan()
        finally:
            self._complete -= added

    async def scan(self) -> None:
        wanted = self._scans_started + 1  # a scan starting after now sees every change so far
        async with self._lock:
            if self._last_finished >= wanted:
                return  # another caller's scan began after our request: nothing to add
            self._scans_started += 1
            number = self._scans_started
            # The walk and everything proportional to the number of files (settling,
            # ids, lookup tables) run in the scan lane: 100,000 files must not stall
            # the event loop, which only swaps the finished snapshot in.
            complete = frozenset(self._complete)
            result = await self._lane.run(self._walk_and_build, complete)
            self._apply(result)
            self._last_finished = number

    async def watch(self, stop: asyncio.Event) -> None:
        backoff = 0.5
        try:
            while not stop.is_set():
                await self.scan()
                if self._missing:
                    await _wait(stop, min(_MISSING_POLL, self._rescan_interval))
                    continue
                try:
                    await self._watch_session(stop)
                    backoff = 0.5
                except Exception as exc:  # e.g. the OS watch limit; rescans still run
                    logger.warning("watching models failed (%s); retry in %.1f s", exc, backoff)
                    await _wait(stop, backoff)
                    backoff = min(backoff * 2, _MAX_BACKOFF, max(self._rescan_interval, 0.5))
        finally:
            if self._recheck is not None:
                self._recheck.cancel()
                self._recheck = None

    async def _watch_session(self, stop: asyncio.Event) -> None:
        root = await self._lane.run(os.path.realpath, self._dir)
        # The first (idle) yield rescans: files added before the watcher started are caught.
        next_rescan = 0.0
        batches = watchfiles.awatch(
            root,
            stop_event=stop,
            debounce=_DEBOUNCE_MS,
            step=50,
            watch_filter=_WatchFilter(root),
            recursive=True,
            rust_timeout=_IDLE_YIELD_MS,
            yield_on_timeout=True,
        )
        async with contextlib.aclosing(batches):
            async for changes in batches:
                if changes or time.monotonic() >= next_rescan:
                    await self.scan()
                    next_rescan = time.monotonic() + self._rescan_interval
                if self._missing:
                    return  # the watch went with the directory; poll until it is back

    # --- reconciling a walk with the published set ---

    def _walk_and_build(self, complete: frozenset[str]) -> _ScanResult:
        """In the scan lane: the walk, then the new snapshot if the set changed.

        Scans run one at a time (the registry's lock), so reading ``_observed`` and
        the current snapshot here races with nothing; ``_apply`` writes them back."""
        walk = scan.walk(self._dir, self._meta_warned, self._headers)
        if walk.failed:
            return _ScanResult(walk)
        settled, due, observed = self._settle_files(walk, complete)
        entries = build_entries(settled, walk.meta, self._snap.by_relpath, self._dir)
        snap = Snapshot(entries) if entries != self._snap.entries else None
        return _ScanResult(walk, observed, due, snap, rejected_keys(walk.rejected))

    def _apply(self, result: _ScanResult) -> None:
        walk = result.walk
        if walk.failed:
            return  # root unreadable (EIO, EACCES): keep the models we know about
        self._note_missing(walk.exists)
        self._warn_new(walk.rejected, walk.unnamable)
        self._rejected = result.rejected
        self._observed = result.observed
        self._unsettled = result.due is not None
        if result.snap is not None:
            self._publish(result.snap)
        if result.due is not None:
            self._schedule_recheck(result.due)

    def _settle_files(
        self, walk: Walk, complete: frozenset[str]
    ) -> tuple[list[Seen], float | None, dict[str, tuple[tuple[str, int, int], float]]]:
        observed: dict[str, tuple[tuple[str, int, int], float]] = {}
        settled: list[Seen] = []
        due: float | None = None
        for seen in walk.files:
            if seen.size == 0:
                continue  # never published; the write that fills it brings a new scan
            sig = (seen.realpath, seen.size, seen.mtime_ns)
            prev = self._observed.get(seen.relpath)
            since = prev[1] if prev is not None and prev[0] == sig else walk.finished
            if seen.relpath in complete:  # known whole: count it as settled already
                since = min(since, walk.started - self._settle)
            observed[seen.relpath] = (sig, since)
            stable = walk.started - since >= self._settle
            old = walk.wall - seen.mtime >= self._settle + _MTIME_SLACK
            if stable or old:
                settled.append(seen)
            else:
                due = since + self._settle if due is None else min(due, since + self._settle)
        return settled, due, observed

    def _publish(self, snap: Snapshot) -> None:
        self._snap = snap
        for fn in list(self._listeners):
            try:
                fn()
            except Exception:
                logger.exception("model list listener failed")

    def _schedule_recheck(self, due: float) -> None:
        if self._recheck is not None:
            if self._recheck_at <= due:
                return  # the earlier re-check reschedules whatever is still pending
            self._recheck.cancel()
        delay = max(due - time.monotonic(), 0.0) + _RECHECK_MARGIN
        self._recheck = asyncio.get_running_loop().call_later(delay, self._start_recheck)
        self._recheck_at = due

    def _start_recheck(self) -> None:
        self._recheck = None
        task = asyncio.get_running_loop().create_task(self.scan())
        self._tasks.add(task)
        task.add_done_callback(self._recheck_done)

    def _recheck_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("model re-check failed", exc_info=task.exception())

    def _note_missing(self, exists: bool) -> None:
        if not exists and not self._missing:
            logger.warning("models directory %s does not exist; no models listed", self._dir)
        elif exists and self._missing:
            logger.info("models directory %s appeared", self._dir)
        self._missing = not exists

    def _warn_new(self, rejected: list[str], unnamable: list[str]) -> None:
        for rel in set(rejected) - self._warned:
            logger.warning("ignoring model %r: symlink to outside the models directory", rel)
        for rel in set(unnamable) - self._warned:
            logger.warning("ignoring model %r: its name cannot be used in requests", rel)
        self._warned = frozenset(rejected) | frozenset(unnamable)
