"""Moving bytes for a pull: ranged GET into a resumable ``.part``, hashing, retries.

The HTTP is huggingface_hub's ``file_download.http_get`` (ranged GET, its own in-call
resume after a cut connection, 200-instead-of-206 handling, byte-count check). Around
it: the ``.part`` survives a daemon restart and is resumed from its size; every byte
is hashed in a second thread while the download runs (sha256 for LFS files, the git
blob sha1 for small ones) and compared with the Hub's listing; the file is fsynced
before anyone may rename it; whole attempts are retried with exponential backoff;
a cancel flag is checked on every chunk written.

Blocking: worker threads only.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from .. import __version__
from ..errors import ChecksumMismatch, InsufficientStorage
from .hub import (
    CHUNK_BYTES,
    Cancelled,
    HubSettings,
    Listing,
    RepoFile,
    TransientHubError,
    configure_library,
    hub_errors,
)

logger = logging.getLogger(__name__)

_HASH_QUEUE = 16  # chunks in flight to the hashing thread (16 MiB)
_MAX_BACKOFF = 30.0


# --- hashing -----------------------------------------------------------------------


def _new_hash(f: RepoFile) -> Any:
    if f.sha256:
        return hashlib.sha256()
    digest = hashlib.sha1(usedforsecurity=False)  # git's blob id: sha1("blob N\0" + data)
    digest.update(b"blob %d\0" % f.size)
    return digest


def expected_digest(f: RepoFile) -> str | None:
    return f.sha256 or f.blob_id


class Hasher:
    """Hashes in a second thread so hashing overlaps the network (hashlib drops the GIL)."""

    def __init__(self, f: RepoFile) -> None:
        self._file = f
        self._queue: queue.Queue[bytes | None] = queue.Queue(_HASH_QUEUE)
        self._start()

    def _start(self) -> None:
        self._hash = _new_hash(self._file)
        self.consumed = 0
        self._thread = threading.Thread(target=self._run, name="rkllmd-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._hash.update(chunk)

    def feed(self, data: bytes) -> None:
        self._queue.put(data)
        self.consumed += len(data)

    def feed_file(self, path: Path, length: int) -> None:
        with path.open("rb") as handle:
            while self.consumed < length:
                block = handle.read(min(CHUNK_BYTES * 4, length - self.consumed))
                if not block:
                    raise OSError(errno.EIO, "file shrank while hashing")
                self.feed(block)

    def reset(self) -> None:
        self.hexdigest()
        self._start()

    def hexdigest(self) -> str:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        return cast(str, self._hash.hexdigest())


def hash_file(f: RepoFile, path: Path, progress: Callable[[int], None]) -> str:
    """The digest of a whole local file (to adopt a file already in place)."""
    hasher = Hasher(f)
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES * 4):
            hasher.feed(block)
            progress(len(block))
    return hasher.hexdigest()


# --- download ----------------------------------------------------------------------


@dataclass(slots=True)
class FileProgress:
    """Shared with the event loop, which samples it (plain attribute reads)."""

    path: str
    total: int
    done: int = 0  # bytes in the .part file
    fetched: int = 0  # bytes received in this job (for the rate)


class _Sink:
    """The file object handed to ``http_get``: writes, hashes, counts, checks cancel."""

    def __init__(
        self, handle: BinaryIO, hasher: Hasher, progress: FileProgress, cancel: threading.Event
    ) -> None:
        self._handle, self._hasher, self._progress, self._cancel = handle, hasher, progress, cancel

    def write(self, data: bytes) -> int:
        if self._cancel.is_set():
            raise Cancelled("the download was cancelled")
        written = self._handle.write(data)
        self._hasher.feed(data)
        self._progress.done += len(data)
        self._progress.fetched += len(data)
        return written

    def tell(self) -> int:
        return self._handle.tell()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._handle.seek(offset, whence)

    def truncate(self, size: int | None = None) -> int:
        # http_get rewinds to 0 when the server ignored our Range header.
        new_size = self._handle.truncate(size)
        self._hasher.reset()
        self._hasher.feed_file(Path(self._handle.name), new_size)
        self._progress.done = new_size
        return new_size


def fetch(
    settings: HubSettings,
    listing: Listing,
    f: RepoFile,
    part: Path,
    progress: FileProgress,
    cancel: threading.Event,
) -> None:
    """Download ``f`` into ``part`` (resuming what is there), verify it, fsync it."""
    from huggingface_hub import hf_hub_url

    configure_library(settings)
    url = hf_hub_url(listing.repo, f.path, revision=listing.commit, endpoint=settings.endpoint)
    hasher = Hasher(f)
    try:
        _fetch_with_retries(settings, listing.repo, url, f, part, hasher, progress, cancel)
        digest = hasher.hexdigest()
    finally:
        hasher.hexdigest()
    expected = expected_digest(f)
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"{f.path} from {listing.repo} is corrupt: its checksum does not match the Hub's",
            file=f.path,
        )


def _fetch_with_retries(
    settings: HubSettings,
    repo: str,
    url: str,
    f: RepoFile,
    part: Path,
    hasher: Hasher,
    progress: FileProgress,
    cancel: threading.Event,
) -> None:
    attempt = 0
    while True:
        try:
            with hub_errors(repo, settings.endpoint), _disk_errors():
                _attempt(settings, url, f, part, hasher, progress, cancel)
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
            if cancel.wait(delay):
                raise Cancelled("the download was cancelled") from None


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage("the models directory ran out of space") from None
        raise


def _attempt(
    settings: HubSettings,
    url: str,
    f: RepoFile,
    part: Path,
    hasher: Hasher,
    progress: FileProgress,
    cancel: threading.Event,
) -> None:
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils._headers import build_hf_headers
    from huggingface_hub.utils.tqdm import silent_tqdm

    headers = build_hf_headers(
        token=settings.token or False, library_name="rkllmd", library_version=__version__
    )
    with part.open("ab") as handle:
        have = handle.tell()
        if have > f.size or have < hasher.consumed:
            handle.truncate(0)
            have = 0
            hasher.reset()
        hasher.feed_file(part, have)  # no-op unless resuming a file from an earlier run
        progress.done = have
        sink = _Sink(handle, hasher, progress, cancel)
        started = time.monotonic()
        try:
            http_get(
                url,
                cast(BinaryIO, sink),
                resume_size=have,
                headers=headers,
                expected_size=f.size,
                displayed_filename=f.path,
                tqdm_class=silent_tqdm,
            )
        except OSError as exc:
            # http_get checks the byte count itself and raises a bare OSError (no errno,
            # not one of the Hub's HTTP errors, which subclass it) when the body ended
            # early; the file's length confirms it without reading the wording.
            if type(exc) is OSError and exc.errno is None and handle.tell() < f.size:
                raise TransientHubError("the transfer ended early") from None
            raise
        handle.flush()
        os.fsync(handle.fileno())
    logger.debug("%s: %d bytes in %.2f s", f.path, f.size - have, time.monotonic() - started)
