"""Moving bytes for a pull: a ranged GET into a resumable ``.part``, hashed as it lands.

The body is read on the event loop (aiohttp), chunk by chunk as the network hands
it over, which is what makes a transfer boundable and cancellable:
- the job's cancel ends it at once, whatever the Hub does (no thread sits in a read);
- a per-read timeout catches a silent Hub, and a stall detector a trickling one
  (less than ``STALL_BYTES`` in ``hub.stall_seconds``), each a retryable failure;
- the Hub may never send more than the file's listed size: a longer body (or a
  ``Content-Length`` announcing one) is a corrupt transfer and its bytes are dropped.
huggingface_hub's ``http_get`` did this HTTP before; it reads a whole MiB before
returning anything and cannot be interrupted, so a Hub sending a byte a second held
a thread, and the daemon's shutdown, forever.

Writing and hashing (sha256 for LFS files, the git blob sha1 for small ones) run in
the store's pull lane, one chunk at a time; the ``.part`` survives a restart and is
resumed from its size (``Range``); a server that ignores the range starts it over.
Whole attempts are retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .. import __version__
from ..errors import (
    ChecksumMismatch,
    HubUnauthorized,
    PullFailed,
    RepoNotFound,
)
from ..lanes import Lane
from .hub import CHUNK_BYTES, HubSettings, Listing, RepoFile, TransientHubError
from .storage import storage_errors

logger = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0
STALL_BYTES = 64 * 1024  # a transfer receiving less than this per stall window is stuck
_WRITE_BYTES = CHUNK_BYTES  # bytes gathered from the network per write-and-hash call


# --- hashing -----------------------------------------------------------------------


def new_hash(f: RepoFile) -> Any:
    if f.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1(usedforsecurity=False)  # git's blob id: sha1("blob N\0" + data)
    digest.update(b"blob %d\0" % f.size)
    return digest


def expected_digest(f: RepoFile) -> str | None:
    return f.sha256 or f.blob_id


def hash_fd(f: RepoFile, fd: int, progress: Callable[[int], None], length: int = -1) -> str:
    """The digest of an open file's first ``length`` bytes (all when -1); blocking."""
    digest = new_hash(f)
    _feed(digest, fd, length, progress)
    return str(digest.hexdigest())


def _feed(digest: Any, fd: int, length: int, progress: Callable[[int], None]) -> None:
    offset = 0
    while length < 0 or offset < length:
        want = CHUNK_BYTES * 4 if length < 0 else min(CHUNK_BYTES * 4, length - offset)
        block = os.pread(fd, want, offset)
        if not block:
            if length >= 0:
                raise OSError(errno.EIO, "file shrank while hashing")
            return
        digest.update(block)
        offset += len(block)
        progress(len(block))


# --- progress and the part file ----------------------------------------------------


@dataclass(slots=True)
class FileProgress:
    """Shared with the job's ticker, which samples it."""

    path: str
    total: int
    done: int = 0  # bytes in the .part file
    fetched: int = 0  # bytes received in this job (for the rate)


class _Part:
    """The ``.part`` being filled: its descriptor and the running digest of its bytes.

    One write at a time runs in the lane while the next chunk arrives from the network
    (``write`` returns once the previous write is done); ``settle`` waits for the one
    in flight, so the descriptor is never closed (and its number reused) under it."""

    def __init__(self, f: RepoFile, fd: int, lane: Lane) -> None:
        self.file, self.fd, self._lane = f, fd, lane
        self.digest = new_hash(f)
        self.size = 0  # bytes handed to the lane
        self._writing: asyncio.Future[Any] | None = None

    async def resume(self) -> int:
        """Hash what an earlier attempt left; a part longer than the file starts over."""
        await self._drain()
        size = os.fstat(self.fd).st_size
        if size > self.file.size:
            await self.restart()
            return 0
        if size > self.size:
            await self._in_lane(_feed, self.digest, self.fd, size, lambda n: None)
            self.size = size
        return size

    async def restart(self) -> None:
        await self._in_lane(os.ftruncate, self.fd, 0)
        self.digest, self.size = new_hash(self.file), 0

    async def write(self, data: bytes) -> None:
        await self._drain()
        self._writing = asyncio.ensure_future(
            self._lane.run(_write_and_hash, self.fd, data, self.digest)
        )
        self.size += len(data)

    async def finish(self) -> str:
        await self._in_lane(os.fsync, self.fd)
        return str(self.digest.hexdigest())

    async def _drain(self) -> None:
        """The write in flight, done (its error raised)."""
        if self._writing is not None:
            await asyncio.shield(self._writing)
            self._writing = None

    async def _in_lane(self, fn: Callable[..., Any], *args: Any) -> None:
        await self._drain()
        self._writing = asyncio.ensure_future(self._lane.run(fn, *args))
        await self._drain()

    async def settle(self) -> None:
        """Wait for a write still running in the lane (after a cancel or a failure)."""
        if self._writing is not None:
            with contextlib.suppress(BaseException):
                await self._writing


def _write_and_hash(fd: int, data: bytes, digest: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    digest.update(data)


# --- one file ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """Where and how to fetch: shared by every file of one pull."""

    session: aiohttp.ClientSession
    settings: HubSettings
    stall_seconds: float
    lane: Lane


async def fetch(
    source: Source, listing: Listing, f: RepoFile, fd: int, progress: FileProgress
) -> None:
    """Fill the part ``fd`` with ``f`` (resuming what is there), verify it, fsync it.

    Raises ChecksumMismatch (its bytes are bad: drop the part) or a Hub error; the
    caller cancels the task to stop it, and closes ``fd`` once the task has ended
    (no write is in flight then)."""
    part = _Part(f, fd, source.lane)
    try:
        await _with_retries(source, listing, f, part, progress)
        digest = await part.finish()
    finally:
        await part.settle()
    expected = expected_digest(f)
    if expected is not None and digest != expected:
        raise ChecksumMismatch(
            f"{f.path} from {listing.repo} is corrupt: its checksum does not match the Hub's",
            file=f.path,
        )


async def _with_retries(
    source: Source, listing: Listing, f: RepoFile, part: _Part, progress: FileProgress
) -> None:
    settings = source.settings
    attempt = 0
    while True:
        try:
            with storage_errors():
                await _attempt(source, listing, f, part, progress)
            return
        except TransientHubError as exc:
            attempt += 1
            if attempt > settings.retries:
                raise
            delay = min(settings.backoff * 2 ** (attempt - 1), _MAX_BACKOFF)
            logger.warning(
                "%s: %s; retry %d/%d in %.1f s",
                f.path,
                exc.message,
                attempt,
                settings.retries,
                delay,
            )
            await asyncio.sleep(delay)


def _headers(settings: HubSettings, have: int) -> dict[str, str]:
    from huggingface_hub.utils._headers import build_hf_headers

    headers = build_hf_headers(
        token=settings.token or False, library_name="rkllmd", library_version=__version__
    )
    headers["Accept-Encoding"] = "identity"  # byte counts must be the file's
    if have:
        headers["Range"] = f"bytes={have}-"
    return dict(headers)


async def _attempt(
    source: Source, listing: Listing, f: RepoFile, part: _Part, progress: FileProgress
) -> None:
    from huggingface_hub import hf_hub_url

    settings = source.settings
    have = await part.resume()
    progress.done = have
    if have == f.size:
        return
    url = hf_hub_url(listing.repo, f.path, revision=listing.commit, endpoint=settings.endpoint)
    started = time.monotonic()
    try:
        async with source.session.get(
            url, headers=_headers(settings, have), timeout=timeouts(settings.timeout)
        ) as response:
            have = await _accept(response, listing, f, part, have)
            progress.done = have
            await _receive(source, response, listing, f, part, progress)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise TransientHubError(
            f"cannot reach the Hub at {settings.shown_endpoint} ({type(exc).__name__})"
        ) from None
    if part.size < f.size:
        raise TransientHubError("the transfer ended early")
    logger.debug("%s: %d bytes in %.2f s", f.path, f.size - have, time.monotonic() - started)


async def _accept(
    response: aiohttp.ClientResponse, listing: Listing, f: RepoFile, part: _Part, have: int
) -> int:
    """Check the status and the announced length; returns where the body starts."""
    status = response.status
    if status == 200 and have:  # the server ignored our Range: the body starts at 0
        await part.restart()
        have = 0
    elif status not in (200, 206):
        raise _status_error(status, listing.repo)
    elif status == 206 and not response.headers.get("Content-Range", "").startswith(
        f"bytes {have}-"
    ):
        raise TransientHubError("the Hub answered a range request with another range")
    length = response.content_length
    if length is not None and have + length > f.size:
        raise _too_long(listing, f)
    return have


def _status_error(status: int, repo: str) -> PullFailed:
    if status in (401, 403):
        return HubUnauthorized(f"the Hub refused access to {repo} (HTTP {status})")
    if status == 404:
        return RepoNotFound(f"a file listed by {repo} is missing on the Hub")
    if status >= 500 or status in (408, 429):
        return TransientHubError(f"the Hub answered HTTP {status}")
    return PullFailed(f"the Hub answered HTTP {status} for {repo}")


def _too_long(listing: Listing, f: RepoFile) -> ChecksumMismatch:
    return ChecksumMismatch(
        f"{f.path} from {listing.repo} is corrupt: the Hub sends more than its listed "
        f"{f.size} bytes",
        file=f.path,
    )


async def _receive(
    source: Source,
    response: aiohttp.ClientResponse,
    listing: Listing,
    f: RepoFile,
    part: _Part,
    progress: FileProgress,
) -> None:
    stall = _StallDetector(source.stall_seconds)
    pending: list[bytes] = []
    gathered = 0
    try:
        while chunk := await response.content.readany():
            if part.size + gathered + len(chunk) > f.size:
                pending.clear()  # none of it is kept: the body is not the listed file
                raise _too_long(listing, f)
            pending.append(chunk)
            gathered += len(chunk)
            progress.fetched += len(chunk)
            stall.received(len(chunk))
            if gathered >= _WRITE_BYTES:
                await _flush(part, pending, progress)
                gathered = 0
    finally:
        if pending:  # a cut connection or a stall: what did arrive is kept for the resume
            await _flush(part, pending, progress)


async def _flush(part: _Part, pending: list[bytes], progress: FileProgress) -> None:
    data = pending[0] if len(pending) == 1 else b"".join(pending)
    pending.clear()
    await part.write(data)
    progress.done = part.size


class _StallDetector:
    """Fails a body that keeps a connection alive with a trickle of bytes."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._start = time.monotonic()
        self._bytes = 0

    def received(self, nbytes: int) -> None:
        self._bytes += nbytes
        now = time.monotonic()
        if now - self._start < self._window:
            return
        if self._bytes < STALL_BYTES:
            raise TransientHubError(
                f"the transfer stalled ({self._bytes} bytes in {now - self._start:.0f} s)"
            )
        self._start, self._bytes = now, 0


def timeouts(seconds: float) -> aiohttp.ClientTimeout:
    """No limit on the whole body (it may be gigabytes); a limit on every wait."""
    return aiohttp.ClientTimeout(
        total=None, connect=seconds, sock_connect=seconds, sock_read=seconds
    )
