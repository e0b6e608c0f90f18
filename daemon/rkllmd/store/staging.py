"""Staging and publishing of a pull (blocking; runs in worker threads).

Layout, all on the models directory's filesystem:

    <models>/.staging/<16 hex of sha1(repo)>/job.json      what the pull is fetching
    <models>/.staging/<...>/<content hash>.part             bytes so far (resumable)
    <models>/.staging/<...>/<content hash>.ok               complete, verified, fsynced
    <models>/<owner>/<name>/<path in repo>                   published files
    <models>/<owner>/<name>/.rkllmd-pull.json                the manifest, written last

The registry and the watcher ignore hidden folders, so nothing under ``.staging`` is
ever listed. Every step works on folder descriptors (safefs.py): other members of the
models dir's group may rename entries in it, and a folder swapped for a symlink must
make the step fail, never lead the write, rename or delete elsewhere. ``.staging``
itself must be the daemon's own and writable by no one else, or it is replaced.

Parts are named by content hash: a later pull of the same repo resumes them even
after a daemon restart, and a changed file upstream never mixes old bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..catalog.manifest import (
    MANIFEST_NAME,
    STAGING_DIR,
    FileRecord,
    InvalidManifest,
    Manifest,
    ModelRecord,
    read_json,
    read_manifest,
    utc_now,
    write_json,
    write_manifest,
)
from ..errors import InsufficientStorage, PullFailed
from ..safefs import Folder, is_link_error
from .hub import Listing, RepoFile
from .selection import Selection
from .transfer import expected_digest, hash_fd

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
_MiB = 1024 * 1024


@dataclass(slots=True)
class Plan:
    models_dir: Path
    listing: Listing
    selection: Selection
    staging: str  # the job's folder name below .staging
    present: list[RepoFile] = field(default_factory=list)  # in place and verified
    ready: list[RepoFile] = field(default_factory=list)  # verified in staging (.ok)
    fetch: list[RepoFile] = field(default_factory=list)  # to download

    def part(self, f: RepoFile) -> str:
        return f"{f.key}.part"

    def ok(self, f: RepoFile) -> str:
        return f"{f.key}.ok"


def staging_name(repo: str) -> str:
    return hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()[:16]


# --- folders -----------------------------------------------------------------------


def _private(parent: Folder, name: str) -> Folder:
    """``parent/name`` as a folder of ours that no one else may write into.

    A group member may have made it first (the models dir is group-writable), or put
    a link there: then its entries could be swapped under us, so it is removed (the
    link, never its target) and made again."""
    for _ in range(2):
        try:
            folder = parent.child(name, create=True, mode=0o700)
        except OSError as exc:
            if not is_link_error(exc):
                raise
        else:
            st = folder.stat()
            if st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                return folder
            folder.close()
        logger.warning("%s is not the daemon's own folder; replacing it", parent.path_of(name))
        parent.remove(name)
    raise PullFailed("the download staging folder keeps being replaced; refusing to use it")


@contextlib.contextmanager
def _opened(plan: Plan) -> Iterator[tuple[Folder, Folder]]:
    """The models root and this job's staging folder (made if missing)."""
    with (
        Folder.open(plan.models_dir) as root,
        _private(root, STAGING_DIR) as top,
        _private(top, plan.staging) as job,
    ):
        yield root, job


@contextlib.contextmanager
def _folder_errors(what: str) -> Iterator[None]:
    """A folder on the way that is a symlink (or a file) fails the pull cleanly."""
    try:
        yield
    except OSError as exc:
        if is_link_error(exc):
            raise PullFailed(f"{what} in the models directory is not a plain folder") from None
        raise


# --- planning ----------------------------------------------------------------------


def prepare(
    models_dir: Path,
    listing: Listing,
    selection: Selection,
    *,
    min_free_bytes: int,
    verifying: Callable[[str, int], None],
) -> Plan:
    """Sort files into present / ready / to fetch, check free space, record the job."""
    plan = Plan(models_dir, listing, selection, staging_name(listing.repo))
    with Folder.open(models_dir) as root:
        repo_dir = _existing(root, listing.repo)
        with contextlib.ExitStack() as stack:
            if repo_dir is not None:
                stack.enter_context(repo_dir)
            manifest = _manifest_or_none(repo_dir)
            staged = _existing(root, f"{STAGING_DIR}/{plan.staging}")
            if staged is not None:
                stack.enter_context(staged)
            for f in selection.files:
                if repo_dir is not None and _in_place(repo_dir, manifest, f, verifying):
                    plan.present.append(f)
                elif staged is not None and staged.regular_size(plan.ok(f)) == f.size:
                    plan.ready.append(f)
                else:
                    plan.fetch.append(f)
    if plan.fetch or plan.ready:
        _check_space(plan, min_free_bytes)
        with _opened(plan) as (_, job):
            _drop_stale(plan, job)
            _write_job(plan, job)
    return plan


def _existing(root: Folder, rel: str) -> Folder | None:
    """The folder ``rel`` if it is there as a plain folder (a link counts as absent)."""
    try:
        return root.walk(rel)
    except OSError:
        return None


def _manifest_or_none(repo_dir: Folder | None) -> Manifest | None:
    if repo_dir is None:
        return None
    try:
        return read_manifest(repo_dir)
    except InvalidManifest:
        return None


def _in_place(
    repo_dir: Folder, manifest: Manifest | None, f: RepoFile, verifying: Callable[[str, int], None]
) -> bool:
    folder_rel, _, name = f.path.rpartition("/")
    folder = _existing(repo_dir, folder_rel)
    if folder is None:
        return False
    with folder:
        try:
            st = folder.lstat(name)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != f.size:
            return False
        record = manifest.files.get(f.path) if manifest else None
        pending = manifest is not None and f.path in manifest.pending
        same = record is not None and record.key == (f.sha256 or f.blob_id)
        if same and not pending and record and record.mtime_ns == st.st_mtime_ns:
            return True  # published by us and untouched since
        expected = expected_digest(f)
        if expected is None:
            return False
        try:
            fd = folder.open_read(name)
        except OSError:
            return False
        try:
            return hash_fd(f, fd, lambda n: verifying(f.path, n)) == expected
        finally:
            os.close(fd)


def _check_space(plan: Plan, min_free_bytes: int) -> None:
    with Folder.open(plan.models_dir) as root:
        staged = _existing(root, f"{STAGING_DIR}/{plan.staging}")
        with staged or contextlib.nullcontext():
            have = {
                f.key: (staged.regular_size(plan.part(f)) or 0) if staged else 0 for f in plan.fetch
            }
        free = shutil.disk_usage(root.fd).free
    needed = sum(f.size - have[f.key] for f in plan.fetch)
    if needed + min_free_bytes > free:
        raise InsufficientStorage(
            f"not enough space for {plan.listing.repo}: it needs {needed / _MiB:.1f} MiB, "
            f"{free / _MiB:.1f} MiB are free and {min_free_bytes / _MiB:.0f} MiB must stay free",
            needed_bytes=needed,
            free_bytes=free,
        )


def _drop_stale(plan: Plan, job: Folder) -> None:
    """Parts of other contents (an older commit) can never be used again."""
    wanted = {JOB_FILE} | {
        name for f in plan.fetch + plan.ready for name in (plan.part(f), plan.ok(f))
    }
    for name in job.names():
        if name not in wanted:
            job.remove(name)


def _write_job(plan: Plan, job: Folder) -> None:
    listing = plan.listing
    data = {
        "version": 1,
        "repo": listing.repo,
        "revision": listing.revision,
        "commit": listing.commit,
        "models": [f.path for f in plan.selection.models],
        "files": [{"path": f.path, "size": f.size, "key": f.key} for f in plan.fetch + plan.ready],
        "updated_at": utc_now(),
    }
    write_json(job, JOB_FILE, data)


# --- the bytes of one file ---------------------------------------------------------


def open_part(plan: Plan, f: RepoFile) -> int:
    """The ``.part`` of ``f`` for appending (made if missing; a link or FIFO refused)."""
    with _opened(plan) as (_, job):
        return job.open_write(plan.part(f), append=True)


def mark_ready(plan: Plan, f: RepoFile) -> None:
    """A fetched, verified and fsynced part becomes ``.ok``."""
    with _opened(plan) as (_, job):
        job.rename(plan.part(f), job, plan.ok(f))
        job.fsync()


# --- publishing --------------------------------------------------------------------


def publish(plan: Plan) -> list[str]:
    """Move the staged files in; the manifest lists them as pending until the end."""
    listing, selection = plan.listing, plan.selection
    moving = [f for f in selection.files if f not in plan.present]
    with (
        _opened(plan) as (root, job),
        _folder_errors(listing.repo),
        root.walk(listing.repo, create=True) as repo_dir,
    ):
        manifest = _manifest_or_none(repo_dir) or Manifest(listing.repo)
        _record(plan, manifest)
        manifest.pending = sorted(set(manifest.pending) | {f.path for f in moving})
        write_manifest(repo_dir, manifest)  # from here on a crash leaves them hidden
        # Staged files are named by content: two files with the same bytes (two "{}"
        # JSON files) share one staged file, which only the last of them may move away.
        uses = Counter(f.key for f in moving)
        for f in moving:  # extras first, model files last
            folder_rel, _, name = f.path.rpartition("/")
            uses[f.key] -= 1
            with _folder_errors(f.path), repo_dir.walk(folder_rel, create=True) as folder:
                if uses[f.key]:
                    _place_copy(job, plan.ok(f), folder, name)
                else:
                    job.rename(plan.ok(f), folder, name)
                folder.fsync()
        for f in selection.files:
            manifest.files[f.path].mtime_ns = _mtime_ns(repo_dir, f.path)
        manifest.pending = sorted(set(manifest.pending) - {f.path for f in selection.files})
        write_manifest(repo_dir, manifest)  # last: the model is complete
    discard(plan)
    return [f"{listing.repo}/{f.path}" for f in moving]


def _record(plan: Plan, manifest: Manifest) -> None:
    listing, selection = plan.listing, plan.selection
    now = utc_now()
    for f in selection.files:
        manifest.files[f.path] = FileRecord(f.size, f.sha256, f.blob_id)
    extras = sorted(f.path for f in selection.extras)
    for m in selection.models:
        old = manifest.models.get(m.path)
        unchanged = m in plan.present and old is not None and old.commit == listing.commit
        pulled_at = old.pulled_at if unchanged and old else now
        manifest.models[m.path] = ModelRecord(extras, listing.revision, listing.commit, pulled_at)


def _place_copy(job: Folder, staged: str, folder: Folder, name: str) -> None:
    """``name`` gets the staged file's bytes (a hard link when it can); it stays staged."""
    temporary = f".{name}.rkllmd-copy"
    folder.remove(temporary)
    try:
        os.link(staged, temporary, src_dir_fd=job.fd, dst_dir_fd=folder.fd, follow_symlinks=False)
    except OSError:  # no hard links on this filesystem: a copy
        with (
            os.fdopen(job.open_read(staged), "rb") as reader,
            os.fdopen(folder.open_write(temporary), "wb") as writer,
        ):
            shutil.copyfileobj(reader, writer)
    folder.rename(temporary, folder, name)


def _mtime_ns(repo_dir: Folder, path: str) -> int:
    folder_rel, _, name = path.rpartition("/")
    with repo_dir.walk(folder_rel) as folder:
        return folder.lstat(name).st_mtime_ns


def discard(plan: Plan) -> None:
    """Remove the job's staging folder (fd-based: nothing outside is ever touched)."""
    discard_repo(plan.models_dir, plan.listing.repo)


def discard_repo(models_dir: Path, repo: str) -> None:
    """Remove ``repo``'s staging folder, if any."""
    with Folder.open(models_dir) as root:
        staged = _existing(root, STAGING_DIR)
        if staged is not None:
            with staged:
                staged.remove(staging_name(repo))


def discard_all(models_dir: Path) -> None:
    with Folder.open(models_dir) as root:
        root.remove(STAGING_DIR)


# --- start-up cleanup and resumable jobs -------------------------------------------


def _read_job(folder: Folder) -> dict[str, Any] | None:
    try:
        job = read_json(folder, JOB_FILE)
        files = job["files"]
        ok = isinstance(job["repo"], str) and isinstance(files, list)
        keys = {str(f["key"]) for f in files} if ok else set()
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return {**job, "keys": keys} if ok else None


def cleanup_staging(models_dir: Path, keep_seconds: float) -> list[dict[str, Any]]:
    """Remove orphaned staging at start; keep recent resumable parts. Returns those kept."""
    with Folder.open(models_dir) as root:
        try:
            st = root.lstat(STAGING_DIR)
        except FileNotFoundError:
            return []
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            root.remove(STAGING_DIR)  # a link, a file, or someone else's folder
            return []
        with root.child(STAGING_DIR) as top:
            return [job for name in top.names() if (job := _clean_job(top, name, keep_seconds))]


def _clean_job(top: Folder, name: str, keep_seconds: float) -> dict[str, Any] | None:
    try:
        folder = top.child(name)
    except OSError:  # a file or a link: never ours to keep
        top.remove(name)
        return None
    with folder:
        job = _read_job(folder)
        age = time.time() - folder.lstat(JOB_FILE).st_mtime if job else 0.0
        if job is None or age > keep_seconds:
            logger.info("removing orphaned download staging %s", name)
            top.remove(name)
            return None
        allowed = {JOB_FILE} | {f"{k}{s}" for k in job["keys"] for s in (".part", ".ok")}
        for child in folder.names():
            if child not in allowed:
                folder.remove(child)
        return _summary(folder, job)


def resumable(models_dir: Path, repo: str) -> dict[str, Any] | None:
    """What a new ``pull`` of ``repo`` would resume from staging, if anything."""
    with Folder.open(models_dir) as root:
        folder = _existing(root, f"{STAGING_DIR}/{staging_name(repo)}")
        if folder is None:
            return None
        with folder:
            job = _read_job(folder)
            summary = _summary(folder, job) if job is not None else None
            return summary if summary and summary["bytes"] else None  # nothing to resume


def _summary(folder: Folder, job: dict[str, Any]) -> dict[str, Any]:
    have = sum(folder.regular_size(f"{k}{s}") or 0 for k in job["keys"] for s in (".part", ".ok"))
    return {
        "repo": job["repo"],
        "revision": job.get("revision"),
        "state": "resumable",
        "bytes": have,
        "total": sum(int(f.get("size", 0)) for f in job["files"]),
        "updated_at": job.get("updated_at"),
    }


__all__ = ["MANIFEST_NAME", "Plan", "cleanup_staging", "prepare", "publish", "resumable"]
