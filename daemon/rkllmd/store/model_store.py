"""The model store: pull models from the Hugging Face Hub, remove them (async API).

Bytes arrive on the event loop (``transfer.py``); all blocking work (listing,
hashing, writing, renames) runs in the store's own bounded thread lanes: pulls in
one, removals and staging cleanup in another, so neither can starve the other, nor
the registry's scans or a reload, which have lanes of their own. A pull's every
await ends as soon as it is cancelled (a thread still blocked in the Hub's listing
is left to finish on its own).

Async API (for the RPC methods and the HTTP routes):

    async with store.pull(PullRequest(repo="owner/name", file=None, ...)) as job:
        async for event in job.events():   # progress dicts; ends with done/failed/cancelled
            ...
        result = await job.result()        # dict, or raises the job's RkllmdError
    store.cancel(job_id)                   # any job; leaving the `async with` early
                                           # cancels it too when nobody else follows it
    await store.pulls()                # running and resumable pulls
    await store.remove("model name", force=False) / await store.remove_all(force=False)

A second ``pull`` of a repo that is already being pulled with the same request joins
the running job. See docs/model-store.md for staging, verification and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from ..catalog.entries import ModelEntry
from ..catalog.manifest import is_safe_relpath, repo_dir_of
from ..catalog.registry import ModelRegistry
from ..config import LiveConfig
from ..errors import (
    ChecksumMismatch,
    InsufficientStorage,
    InvalidParams,
    ModelInUse,
    ModelPinned,
    RkllmdError,
)
from ..lanes import Lane
from ..manager import ModelManager
from ..views import State
from . import hub, removal, staging, transfer
from .job import PullJob
from .selection import check_patterns, select
from .storage import storage_errors

logger = logging.getLogger(__name__)

LISTED_GRACE_S = 5.0
PULL_THREADS = 4  # listing, hashing, writing and publishing of all pulls together
REMOVE_THREADS = 1  # removals, staging cleanup, resumable summaries
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PullRequest:
    repo: str
    file: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    revision: str | None = None
    token: str | None = None  # overrides hub.token for this pull (HTTP /v1/download)

    def checked(self) -> PullRequest:
        hub.check_repo_id(self.repo)
        if self.revision is not None:
            hub.check_revision(self.revision)
        if self.file is not None and not is_safe_relpath(self.file):
            raise InvalidParams(f"invalid file name {self.file[:100]!r}")
        check_patterns(self.include, "include")
        check_patterns(self.exclude, "exclude")
        return self


class ModelStore:
    def __init__(
        self,
        models_dir: Path,
        registry: ModelRegistry,
        manager: ModelManager,
        config: LiveConfig,
    ) -> None:
        self._dir = Path(models_dir)
        self._registry = registry
        self._manager = manager
        self._config = config
        self._jobs: dict[str, PullJob] = {}  # by repo, running only
        self._resumable: dict[str, dict[str, Any]] = {}  # by repo: parts left in staging
        self._pull_lane = Lane("pull", PULL_THREADS)
        self._remove_lane = Lane("remove", REMOVE_THREADS)
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Remove orphaned staging (kept: recent, resumable parts of known pulls)."""
        keep = self._config.current.hub.keep_partial_hours * 3600
        try:
            kept = await self._remove_lane.run(staging.cleanup_staging, self._dir, keep)
        except OSError as exc:
            logger.warning("cannot clean download staging: %s", exc.strerror)
            return
        for job in kept:
            logger.info("interrupted pull of %s can be resumed with pull", job["repo"])
        self._resumable = {job["repo"]: job for job in kept}

    async def close(self, grace: float = 15.0) -> None:
        """Cancel running pulls; their parts stay for a later resume."""
        tasks = [job.task for job in self._jobs.values() if job.task is not None]
        for job in self._jobs.values():
            job.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        if self._session is not None:
            await self._session.close()
        self._pull_lane.close()
        self._remove_lane.close()

    # --- pull ----------------------------------------------------------------------

    @asynccontextmanager
    async def pull(self, request: PullRequest) -> AsyncIterator[PullJob]:
        job = self._start_or_join(request.checked())
        job.attach()
        try:
            yield job
        finally:
            job.detach()

    def _start_or_join(self, request: PullRequest) -> PullJob:
        running = self._jobs.get(request.repo)
        if running is not None:
            if running.request == request:
                return running
            raise ModelInUse(f"{request.repo} is already being pulled (job {running.id})")
        job = PullJob(uuid.uuid4().hex[:12], request.repo, request)
        self._jobs[request.repo] = job

        def forget() -> None:
            self._jobs.pop(request.repo, None)

        job.start(self._execute(job), on_done=forget)
        return job

    def cancel(self, job_id: str) -> bool:
        for job in self._jobs.values():
            if job.id == job_id:
                job.cancel()
                return True
        return False

    def job(self, job_id: str) -> PullJob | None:
        return next((j for j in self._jobs.values() if j.id == job_id), None)

    async def pulls(self) -> list[dict[str, Any]]:
        """Running pulls (their latest event) and interrupted ones (kept in memory)."""
        running = [job.snapshot() for job in self._jobs.values()]
        idle = [v for repo, v in sorted(self._resumable.items()) if repo not in self._jobs]
        return running + idle

    async def _execute(self, job: PullJob) -> dict[str, Any]:
        self._resumable.pop(job.repo, None)
        try:
            return await self._pull(job)
        finally:  # whatever is left in staging can be resumed by the next pull
            with contextlib.suppress(OSError):
                left = await self._remove_lane.run(staging.resumable, self._dir, job.repo)
                if left is None:  # nothing to resume: no "resumable, 0 B of N" ghost
                    await self._remove_lane.run(staging.discard_repo, self._dir, job.repo)
                else:
                    self._resumable[job.repo] = left

    async def _pull(self, job: PullJob) -> dict[str, Any]:
        request: PullRequest = job.request
        cfg = self._config.current.hub
        token = request.token or await self._pull_lane.run(hub.read_token, cfg)
        settings = hub.HubSettings(cfg.endpoint, token, cfg.timeout_seconds, cfg.retries)
        job.set_stage("resolving", f"looking up {request.repo}")
        listing = await self._step(
            job,
            self._pull_lane.run(hub.list_repo, settings, request.repo, request.revision or "main"),
        )
        selection = select(
            listing,
            file=request.file,
            include=request.include,
            exclude=request.exclude,
            technical=cfg.technical_files,
        )
        job.set_stage("verifying", "checking files already in place")
        plan = await self._step(
            job,
            self._disk(
                staging.prepare,
                self._dir,
                listing,
                selection,
                min_free_bytes=cfg.min_free_bytes,
                verifying=job.on_verify,
            ),
        )
        job.set_plan(plan)
        source = transfer.Source(self._client(), settings, cfg.stall_seconds, self._pull_lane)
        await self._download(job, source, plan)
        job.set_stage("publishing", f"publishing {request.repo}")
        await self._disk(staging.publish, plan)
        ids = await self._wait_listed([f"{listing.repo}/{m.path}" for m in selection.models])
        return job.summary(plan, ids)

    async def _disk(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A step of a pull that changes the models dir, in the pull lane."""
        with storage_errors():
            return await self._pull_lane.run(fn, *args, **kwargs)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # One session for every transfer; each request brings its own timeouts.
            self._session = aiohttp.ClientSession(
                trust_env=True,  # HTTPS_PROXY and friends, as huggingface_hub honours them
                auto_decompress=False,
            )
        return self._session

    @staticmethod
    async def _step(job: PullJob, work: Awaitable[T]) -> T:
        """``work``, unless the pull is cancelled first: then Cancelled at once."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(job.cancelled.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task  # a cancelled write settles first (its descriptor is then closed)
            job.check_cancelled()
        return task.result()

    async def _download(self, job: PullJob, source: transfer.Source, plan: staging.Plan) -> None:
        job.set_stage("downloading", f"downloading {plan.listing.repo}")
        for f in plan.fetch:
            job.check_cancelled()
            progress = job.begin_file(f)
            try:
                fd = await self._disk(staging.open_part, plan, f)
                try:
                    await self._step(job, transfer.fetch(source, plan.listing, f, fd, progress))
                finally:
                    os.close(fd)  # the transfer task has ended: no write is in flight
                await self._disk(staging.mark_ready, plan, f)
            except (InsufficientStorage, ChecksumMismatch):
                # The Hub sent bytes that do not match its own checksum: nothing this
                # transfer staged is kept for a resume (the next pull starts clean).
                await self._disk(staging.discard, plan)
                raise
            job.end_file(f)
        job.check_cancelled()

    async def _wait_listed(self, relpaths: list[str]) -> list[str]:
        """Ids of the published model files once the registry lists them."""
        await self._registry.scan_complete(relpaths)
        deadline = time.monotonic() + LISTED_GRACE_S
        while True:
            found = {e.relpath: e.id for e in self._registry.entries()}
            if all(r in found for r in relpaths) or time.monotonic() > deadline:
                return [found[r] for r in relpaths if r in found]
            await asyncio.sleep(0.1)

    # --- remove --------------------------------------------------------------------

    async def remove(self, name: str, *, force: bool = False) -> dict[str, Any]:
        entry = self._registry.resolve(name)
        self._check_not_pulling([entry])
        await self._free([entry], force)
        with storage_errors():
            files = await self._remove_lane.run(removal.remove_model, self._dir, entry.relpath)
        await self._registry.scan()
        logger.info("removed model %s (%d files)", entry.id, len(files))
        return {"id": entry.id, "removed": [entry.id], "files": files}

    async def remove_all(self, *, force: bool = False) -> dict[str, Any]:
        if self._jobs:
            raise ModelInUse("pulls are running: " + ", ".join(sorted(self._jobs)))
        entries = self._registry.entries()
        await self._free(entries, force)
        relpaths = [e.relpath for e in entries]
        with storage_errors():
            files = await self._remove_lane.run(removal.remove_all, self._dir, relpaths)
        self._resumable.clear()
        await self._registry.scan()
        logger.info("removed all models (%d, %d files)", len(entries), len(files))
        return {"removed": [e.id for e in entries], "files": files, "count": len(entries)}

    def _check_not_pulling(self, entries: list[ModelEntry]) -> None:
        for entry in entries:
            repo = repo_dir_of(entry.relpath)
            if repo in self._jobs:
                raise ModelInUse(f"{repo} is being pulled; cancel the pull first")

    def _pinned(self, entries: list[ModelEntry]) -> str | None:
        """The model among ``entries`` that is pinned (generation.pin, or a pinned load)."""
        ids = {e.id for e in entries}
        resident = self._manager.status().resident
        if resident is not None and resident.pinned and resident.entry.id in ids:
            return resident.entry.id
        name = self._config.current.generation.pin
        try:
            pinned = self._registry.resolve(name).id if name else None
        except RkllmdError:
            return None
        return pinned if pinned in ids else None

    async def _free(self, entries: list[ModelEntry], force: bool) -> None:
        pinned = self._pinned(entries)
        if pinned is not None and not force:
            raise ModelPinned(
                f"{pinned} is pinned; unpin it (generation.pin) or use force", pinned=pinned
            )
        # The model the worker holds, or is loading or unloading; a failed one is free.
        status = self._manager.status()
        busy = status.model if status.state not in (State.IDLE, State.FAILED) else None
        resident = busy if busy in {e.id for e in entries} else None
        if resident is None:
            return
        if not force:
            raise ModelInUse(f"{resident} is loaded; unload it first or use force", model=resident)
        logger.info("unloading %s before removing it", resident)
        with contextlib.suppress(RkllmdError):
            await self._manager.unload()
