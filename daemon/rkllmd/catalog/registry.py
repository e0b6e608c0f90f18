"""The model registry: which model files the models directory holds, and their ids.

Only files that have stopped changing are published, so a copy or download in
progress is never loadable. All filesystem access happens in a worker thread;
`entries` and `resolve` read an immutable in-memory snapshot and never do I/O.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import watchfiles

from ..errors import AmbiguousModel, InvalidModelName, ModelNotFound
from ..lanes import Lane
from . import scan
from .gguf import HeaderCache
from .metadata import NO_META, ModelMeta
from .scan import CONTROL, DRIVE, TEMP_SUFFIXES, Seen, Walk

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 255

_MTIME_SLACK = 2.0  # FAT rounds mtimes down by up to 2 s, so a fresh file can look old
_RECHECK_MARGIN = 0.02  # so the re-check lands after the settle window, not on its edge
_DEBOUNCE_MS = 300
_IDLE_YIELD_MS = 500  # awatch yields this often when idle, so due rescans can run
_MISSING_POLL = 1.0
_MAX_BACKOFF = 30.0
_IDS_IN_MESSAGE = 20
_WORD_BREAKS = "-_./ "
IDS_IN_DETAILS = 100  # a 404 never carries 100,000 ids (1 MB) in its body


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One published model file."""

    id: str
    path: Path
    relpath: str
    format: Literal["gguf", "rkllm"]
    size_bytes: int
    mtime: float
    meta: ModelMeta = NO_META  # see metadata.py: sidecar, Hub files, pull manifest
    root: Path | None = None  # the models dir it was listed in (the worker opens it below)

    @property
    def modified(self) -> str:
        """The file's modification time, ISO 8601 in UTC to the second."""
        moment = datetime.fromtimestamp(self.mtime, UTC).isoformat(timespec="seconds")
        return moment.replace("+00:00", "Z")


# --- the filesystem walk (runs in a worker thread) ---------------------------------


def _strip_ext(name: str) -> str:
    return name.rsplit(".", 1)[0]


def _build_entries(
    files: Iterable[Seen],
    metas: dict[str, ModelMeta] | None = None,
    previous: dict[str, ModelEntry] | None = None,
    root: Path | None = None,
) -> tuple[ModelEntry, ...]:
    """The entries of a walk; an unchanged file keeps its entry object from
    ``previous`` (by relpath): with 100,000 files, rebuilding them all on every scan
    fed the garbage collector full collections that held the GIL for seconds."""
    metas = metas or {}
    previous = previous or {}
    files = list(files)
    stems = Counter(_strip_ext(f.relpath.rsplit("/", 1)[-1]) for f in files)
    ids = {}
    for f in files:
        stem = _strip_ext(f.relpath.rsplit("/", 1)[-1])
        ids[f.relpath] = stem if stems[stem] == 1 else _strip_ext(f.relpath)
    # `d/x.gguf` next to `d/x.rkllm`: without the extension the two would still clash
    clashes = Counter(ids.values())
    entries = []
    for f in files:
        model_id = ids[f.relpath] if clashes[ids[f.relpath]] == 1 else f.relpath
        meta = metas.get(f.relpath, NO_META)
        old = previous.get(f.relpath)
        if old is not None and _same(old, f, model_id, meta):
            entries.append(old)
            continue
        entries.append(
            ModelEntry(
                id=model_id,
                path=Path(f.realpath),
                relpath=f.relpath,
                format="gguf" if f.relpath.lower().endswith(".gguf") else "rkllm",
                size_bytes=f.size,
                mtime=f.mtime,
                meta=meta,
                root=root,
            )
        )
    return tuple(sorted(entries, key=lambda e: (e.id, e.relpath)))


def _same(entry: ModelEntry, f: Seen, model_id: str, meta: ModelMeta) -> bool:
    return (
        entry.id == model_id
        and entry.size_bytes == f.size
        and entry.mtime == f.mtime
        and entry.meta == meta
        and str(entry.path) == f.realpath
    )


Found = ModelEntry | tuple[ModelEntry, ...]  # one entry, or several under one key


def _add(table: dict[str, Found], key: str, entry: ModelEntry) -> None:
    """No list per key: most keys name one model, and lists are objects the garbage
    collector must visit (three per model, 300,000 of them for 100,000 files)."""
    old = table.get(key)
    if old is None:
        table[key] = entry
    elif isinstance(old, tuple):
        table[key] = (*old, entry)
    else:
        table[key] = (old, entry)


def _all(table: dict[str, Found], key: str) -> list[ModelEntry]:
    found = table.get(key)
    if found is None:
        return []
    return list(found) if isinstance(found, tuple) else [found]


class _Snapshot:
    """One published set with its lookup tables; replaced whole, never mutated."""

    def __init__(self, entries: tuple[ModelEntry, ...]) -> None:
        self.entries = entries
        self.by_id = {e.id: e for e in entries}
        self.by_relpath = {e.relpath: e for e in entries}
        self.by_path: dict[str, ModelEntry] = {}  # relpath with and without extension
        self.by_file: dict[str, Found] = {}  # file name, with and without extension
        self.by_fold: dict[str, Found] = {}  # casefolded id
        self.by_alias: dict[str, Found] = {}  # casefolded alias from metadata
        for e in entries:
            for alias in e.meta.aliases:
                _add(self.by_alias, alias.casefold(), e)
            name = e.relpath.rsplit("/", 1)[-1]
            _add(self.by_file, name, e)
            if _strip_ext(name) != name:
                _add(self.by_file, _strip_ext(name), e)
            _add(self.by_fold, e.id.casefold(), e)
            self.by_path.setdefault(_strip_ext(e.relpath), e)
            self.by_path[e.relpath] = e
        folded = sorted((e.id.casefold(), e.id) for e in entries)  # for prefix search
        self.fold_keys = [k for k, _ in folded]
        self.fold_entries = [self.by_id[i] for _, i in folded]

    def word_prefixed(self, prefix: str) -> list[ModelEntry]:
        """Ids with a word (after ``-``, ``_``, ``.``, ``/``) starting with ``prefix``:
        ``gemma-3-270m`` finds ``google_gemma-3-270m-w8a8-...-rk3588``. A linear scan,
        reached only when every cheaper way found nothing."""
        found = []
        for key, entry in zip(self.fold_keys, self.fold_entries, strict=True):
            at = key.find(prefix, 1)
            while at > 0 and key[at - 1] not in _WORD_BREAKS:
                at = key.find(prefix, at + 1)
            if at > 0:
                found.append(entry)
        return found

    def prefixed(self, prefix: str) -> list[ModelEntry]:
        i = bisect.bisect_left(self.fold_keys, prefix)
        found = []
        while i < len(self.fold_keys) and self.fold_keys[i].startswith(prefix):
            found.append(self.fold_entries[i])
            i += 1
        return found


def _rejected_keys(relpaths: Iterable[str]) -> frozenset[str]:
    keys: set[str] = set()
    for rel in relpaths:
        name = rel.rsplit("/", 1)[-1]
        keys.update(k.casefold() for k in (rel, _strip_ext(rel), name, _strip_ext(name)))
    return frozenset(keys)


# --- name validation and error messages --------------------------------------------


def _show(name: str) -> str:
    """The user's input, safe to embed in a message."""
    return repr(name[:80]) + ("..." if len(name) > 80 else "")


def _id_list(ids: list[str], count: int | None = None) -> str:
    if not ids:
        return "no models are available"
    more = (len(ids) if count is None else count) - _IDS_IN_MESSAGE
    return ", ".join(ids[:_IDS_IN_MESSAGE]) + (f", ... ({more} more)" if more > 0 else "")


def _validate(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidModelName("model name must be a non-empty string")
    problem = None
    if len(name) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} characters"
    elif CONTROL.search(name):
        problem = "contains control characters"
    elif name.startswith(("/", "\\")) or DRIVE.match(name):
        problem = "must not be an absolute path"
    elif ".." in re.split(r"[/\\]", name):
        problem = "must not contain '..'"
    elif "." in re.split(r"[/\\]", name):
        problem = "must not contain '.' path components"
    elif "\\" in name:
        problem = "must not contain backslashes"
    if problem:
        raise InvalidModelName(f"model name {_show(name)} {problem}")


def _pick(name: str, matches: list[ModelEntry], snap: _Snapshot) -> ModelEntry:
    ids = sorted({e.id for e in matches})
    if len(matches) == 1:
        return matches[0]
    if matches:
        msg = f"model name {_show(name)} is ambiguous; candidates: {_id_list(ids)}"
        raise AmbiguousModel(msg, candidates=ids)
    available = [e.id for e in snap.entries[: IDS_IN_DETAILS + _IDS_IN_MESSAGE]]
    count = len(snap.entries)
    msg = f"model {_show(name)} not found; available: {_id_list(available, count)}"
    raise ModelNotFound(msg, available=available[:IDS_IN_DETAILS], available_count=count)


# --- the registry ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ScanResult:
    walk: Walk
    observed: dict[str, tuple[tuple[str, int, int], float]] = field(default_factory=dict)
    due: float | None = None
    snap: _Snapshot | None = None  # None: the published set did not change
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
        self._snap = _Snapshot(())
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
        _validate(name)
        snap, folded = self._snap, name.casefold()
        if folded in self._rejected:
            msg = f"model {_show(name)} refers to a file outside the models directory"
            raise InvalidModelName(msg)
        found = snap.by_id.get(name) or snap.by_path.get(name)
        if found is not None:
            return found
        matches = (
            _all(snap.by_file, name)
            or _all(snap.by_alias, folded)
            or _all(snap.by_fold, folded)
            or snap.prefixed(folded)
            or snap.word_prefixed(folded)
        )
        return _pick(name, matches, snap)

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
        entries = _build_entries(settled, walk.meta, self._snap.by_relpath, self._dir)
        snap = _Snapshot(entries) if entries != self._snap.entries else None
        return _ScanResult(walk, observed, due, snap, _rejected_keys(walk.rejected))

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

    def _publish(self, snap: _Snapshot) -> None:
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
