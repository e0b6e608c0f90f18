"""The Hugging Face Hub side of a pull (blocking; worker threads only).

huggingface_hub does the talking: the repo listing (``HfApi.model_info`` with file
metadata), URLs, headers, token handling and redirects. Here: the configuration it
gets from us, validation of repo ids and of every file name the Hub lists (before
anything is written: notes §4.6, CVE-2026-15717), the hub token, and the one mapping
from huggingface_hub / httpx failures to our errors. The bytes: ``transfer.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from .. import __version__
from ..catalog.manifest import is_safe_relpath
from ..config import HubSection, redact_url
from ..errors import (
    Aborted,
    HubUnauthorized,
    HubUnreachable,
    InvalidListing,
    InvalidParams,
    PullFailed,
    RepoNotFound,
)
from ..safefs import UnsafeEntry, open_regular

logger = logging.getLogger(__name__)

_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID = re.compile(rf"{_NAME}/{_NAME}")
REVISION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
CHUNK_BYTES = 1024 * 1024
MAX_NAME_BYTES = 200


class Cancelled(Aborted):
    """Raised inside the download thread when the job was cancelled."""


class TransientHubError(HubUnreachable):
    """A failure worth retrying: network errors, timeouts, 5xx, 429, short bodies."""


@dataclass(frozen=True, slots=True)
class HubSettings:
    endpoint: str
    token: str | None
    timeout: float
    retries: int
    backoff: float = 1.0  # first retry delay in seconds; doubles up to 30 s

    @property
    def shown_endpoint(self) -> str:
        """The endpoint as messages and logs may show it (no ``user:password@``)."""
        return redact_url(self.endpoint)


@dataclass(frozen=True, slots=True)
class RepoFile:
    path: str
    size: int
    sha256: str | None  # LFS files: the content sha256
    blob_id: str | None  # git blob sha1 (what small files are checked against)

    @property
    def key(self) -> str:
        """A name for this content: its hash, or (no hash listed) a hash of the path."""
        if self.sha256 or self.blob_id:
            return cast(str, self.sha256 or self.blob_id)
        return (
            "p"
            + hashlib.sha1(f"{self.path}:{self.size}".encode(), usedforsecurity=False).hexdigest()
        )


@dataclass(frozen=True, slots=True)
class Listing:
    repo: str
    revision: str
    commit: str
    files: tuple[RepoFile, ...]


def check_repo_id(repo: str) -> str:
    if not isinstance(repo, str) or not REPO_ID.fullmatch(repo) or ".." in repo or "--" in repo:
        raise InvalidParams(f"repo must look like 'owner/name', got {repo[:100]!r}")
    return repo


def check_revision(revision: str) -> str:
    if not REVISION.fullmatch(revision) or ".." in revision:
        raise InvalidParams(f"invalid revision {revision[:100]!r}")
    return revision


def read_token(cfg: HubSection) -> str | None:
    """hub.token, else the first line of hub.token_file (which only we may read)."""
    if cfg.token is not None:
        return cfg.token.get_secret_value().strip() or None
    if cfg.token_file is None:
        return None
    try:
        # O_NONBLOCK + fstat first: a FIFO there must not hang the pull (safefs.py).
        with os.fdopen(open_regular(cfg.token_file, follow=True), "rb") as handle:
            st = os.fstat(handle.fileno())
            raw = handle.read(4096)
    except OSError as exc:
        reason = "not a regular file" if isinstance(exc, UnsafeEntry) else exc.strerror
        raise HubUnauthorized(f"hub.token_file cannot be read ({reason})") from None
    if st.st_mode & 0o077 or st.st_uid != os.geteuid():
        raise HubUnauthorized(
            "hub.token_file must be a file owned by the daemon's user and readable by it "
            "only (chmod 600); refusing to use it"
        )
    token = raw.decode("utf-8", "replace").strip().splitlines()
    return token[0].strip() if token else None


# --- errors ------------------------------------------------------------------------


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def translate(exc: BaseException, repo: str, endpoint: str) -> PullFailed | None:
    """The RkllmdError for a huggingface_hub / httpx failure, None if not one of those.

    ``endpoint`` is only ever shown redacted."""
    import httpx2
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.OfflineModeIsEnabled):
        return HubUnreachable("the Hub is unreachable: offline mode is enabled (HF_HUB_OFFLINE)")
    if isinstance(exc, hf.GatedRepoError):
        return HubUnauthorized(f"{repo} is gated: accept its terms and configure hub.token")
    if isinstance(exc, hf.RevisionNotFoundError):
        return RepoNotFound(f"{repo} has no such revision")
    if isinstance(exc, hf.RepositoryNotFoundError):
        return RepoNotFound(f"repository {repo} not found (or private: configure hub.token)")
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return RepoNotFound(f"a file listed by {repo} is missing on the Hub")
    if isinstance(exc, httpx2.TransportError):
        reason = type(exc).__name__
        return TransientHubError(f"cannot reach the Hub at {redact_url(endpoint)} ({reason})")
    status = _status(exc)
    if status in (401, 403):
        return HubUnauthorized(f"the Hub refused access to {repo} (HTTP {status})")
    if status is not None and (status >= 500 or status in (408, 429)):
        return TransientHubError(f"the Hub answered HTTP {status}")
    if status is not None:
        return PullFailed(f"the Hub answered HTTP {status} for {repo}")
    return None


@contextlib.contextmanager
def hub_errors(repo: str, endpoint: str) -> Iterator[None]:
    try:
        yield
    except PullFailed:
        raise
    except Exception as exc:
        mapped = translate(exc, repo, endpoint)
        if mapped is None:
            raise
        raise mapped from None


def configure_library() -> None:
    """Process-wide huggingface_hub settings (the daemon is its only user in-process):
    its warnings go to our log once, not to stderr too."""
    hf_logger = logging.getLogger("huggingface_hub")
    for handler in list(hf_logger.handlers):
        hf_logger.removeHandler(handler)
    hf_logger.propagate = True


# --- listing -----------------------------------------------------------------------


def list_repo(settings: HubSettings, repo: str, revision: str) -> Listing:
    """Commit and files of ``repo`` at ``revision``; every name validated."""
    from huggingface_hub import HfApi

    configure_library()
    api = HfApi(endpoint=settings.endpoint, library_name="rkllmd", library_version=__version__)
    try:
        with hub_errors(repo, settings.endpoint):  # shown redacted
            info = api.model_info(
                repo,
                revision=revision,
                files_metadata=True,
                timeout=settings.timeout,
                token=settings.token or False,
            )
    except (KeyError, TypeError, ValueError, RecursionError) as exc:  # a hostile listing
        # The exception text may quote request headers (the token): log it, never send it.
        logger.warning("invalid listing for %s: %s", repo, type(exc).__name__)
        raise InvalidListing(f"the Hub sent an invalid listing for {repo}") from None
    commit = info.sha
    if not isinstance(commit, str) or not _SHA1.fullmatch(commit):
        raise InvalidListing(f"the Hub listed no valid commit for {repo}")
    files = tuple(_repo_file(repo, s) for s in info.siblings or ())
    if len({f.path for f in files}) != len(files):
        raise InvalidListing(f"the Hub listed a file of {repo} twice")
    return Listing(repo, revision, commit, files)


def _fits(path: str) -> bool:
    """Every component short enough for the filesystem (NAME_MAX, in bytes), with room
    for the ``.<name>.<pid>.tmp`` the durable writes use."""
    try:
        return all(len(part.encode()) <= MAX_NAME_BYTES for part in path.split("/"))
    except UnicodeEncodeError:
        return False


def _repo_file(repo: str, sibling: Any) -> RepoFile:
    path = sibling.rfilename
    if not isinstance(path, str) or not is_safe_relpath(path) or not _fits(path):
        shown = repr(path)[:120]
        raise InvalidListing(f"the Hub listing of {repo} has an unsafe file name {shown}")
    size = sibling.size
    if not isinstance(size, int) or size < 0:
        raise InvalidListing(f"the Hub listing of {repo} has no size for {path!r}")
    sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
    blob_id = sibling.blob_id
    if sibling.lfs is not None and not (isinstance(sha256, str) and _SHA256.fullmatch(sha256)):
        raise InvalidListing(f"the Hub listing of {repo} has no sha256 for {path!r}")
    if blob_id is not None and not (isinstance(blob_id, str) and _SHA1.fullmatch(blob_id)):
        blob_id = None
    return RepoFile(path, size, sha256, None if sha256 else blob_id)
