"""Staging and publishing of a pull (blocking; runs in worker threads).

Layout, all on the models directory's filesystem:

    <models>/.staging/<16 hex of sha1(repo)>/job.json      what the pull is fetching
    <models>/.staging/<...>/<content hash>.part             bytes so far (resumable)
    <models>/.staging/<...>/<content hash>.ok               complete, verified, fsynced
    <models>/<owner>/<name>/<path in repo>                   published files
    <models>/<owner>/<name>/.rkllmd-pull.json                the manifest, written last

The registry and the watcher ignore hidden folders, so nothing under ``.staging`` is
ever listed. Parts are named by content hash: a later pull of the same repo resumes
them even after a daemon restart, and a changed file upstream never mixes old bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
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
    atomic_write_json,
    fsync_dir,
    read_json,
    read_manifest,
    utc_now,
    write_manifest,
)
from ..errors import InsufficientStorage, PullFailed
from .hub import Listing, RepoFile
from .selection import Selection
from .transfer import expected_digest, hash_file

logger = logging.getLogger(__name__)

JOB_FILE = "job.json"
_MiB = 1024 * 1024


@dataclass(slots=True)
class Plan:
    listing: Listing
    selection: Selection
    repo_dir: Path
    staging: Path
    present: list[RepoFile] = field(default_factory=list)  # in place and verified
    ready: list[RepoFile] = field(default_factory=list)  # verified in staging (.ok)
    fetch: list[RepoFile] = field(default_factory=list)  # to download

    def part(self, f: RepoFile) -> Path:
        return self.staging / f"{f.key}.part"

    def ok(self, f: RepoFile) -> Path:
        return self.staging / f"{f.key}.ok"


def staging_root(models_dir: Path) -> Path:
    return models_dir / STAGING_DIR


def staging_dir(models_dir: Path, repo: str) -> Path:
    digest = hashlib.sha1(repo.encode(), usedforsecurity=False).hexdigest()[:16]
    return staging_root(models_dir) / digest


# --- safe directories --------------------------------------------------------------


def safe_mkdirs(base: Path, rel: str) -> Path:
    """``base/rel`` as a real directory below ``base``: no component may be a symlink."""
    current = base
    for part in [p for p in rel.split("/") if p]:
        current = current / part
        try:
            current.lstat()
        except FileNotFoundError:
            current.mkdir(mode=0o755)
            fsync_dir(current.parent)
            continue
        if not current.is_dir() or current.is_symlink():
            raise PullFailed(f"{rel} exists in the models directory and is not a folder")
    return current


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
    repo_dir = models_dir / listing.repo
    plan = Plan(listing, selection, repo_dir, staging_dir(models_dir, listing.repo))
    manifest = _manifest_or_none(repo_dir)
    for f in selection.files:
        if _in_place(repo_dir, manifest, f, verifying):
            plan.present.append(f)
        elif _size_of(plan.ok(f)) == f.size:
            plan.ready.append(f)
        else:
            plan.fetch.append(f)
    if plan.fetch or plan.ready:
        _check_space(models_dir, plan, min_free_bytes)
        safe_mkdirs(models_dir, f"{STAGING_DIR}/{plan.staging.name}")
        _drop_stale(plan)
        _write_job(plan)
    return plan


def _manifest_or_none(repo_dir: Path) -> Manifest | None:
    try:
        return read_manifest(repo_dir)
    except InvalidManifest:
        return None


def _size_of(path: Path) -> int | None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    return st.st_size if path.is_file() and not path.is_symlink() else None


def _in_place(
    repo_dir: Path, manifest: Manifest | None, f: RepoFile, verifying: Callable[[str, int], None]
) -> bool:
    dest = repo_dir / f.path
    try:
        st = dest.lstat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    if dest.is_symlink() or not dest.is_file() or st.st_size != f.size:
        return False
    record = manifest.files.get(f.path) if manifest else None
    pending = manifest is not None and f.path in manifest.pending
    same = record is not None and record.key == (f.sha256 or f.blob_id)
    if same and not pending and record and record.mtime_ns == st.st_mtime_ns:
        return True  # published by us and untouched since
    expected = expected_digest(f)
    if expected is None:
        return False
    return hash_file(f, dest, lambda n: verifying(f.path, n)) == expected


def _check_space(models_dir: Path, plan: Plan, min_free_bytes: int) -> None:
    needed = sum(f.size - (_size_of(plan.part(f)) or 0) for f in plan.fetch)
    free = shutil.disk_usage(models_dir).free
    if needed + min_free_bytes > free:
        raise InsufficientStorage(
            f"not enough space for {plan.listing.repo}: it needs {needed / _MiB:.1f} MiB, "
            f"{free / _MiB:.1f} MiB are free and {min_free_bytes / _MiB:.0f} MiB must stay free",
            needed_bytes=needed,
            free_bytes=free,
        )


def _drop_stale(plan: Plan) -> None:
    """Parts of other contents (an older commit) can never be used again."""
    wanted = {JOB_FILE} | {
        p.name for f in plan.fetch + plan.ready for p in (plan.part(f), plan.ok(f))
    }
    for child in plan.staging.iterdir():
        if child.name not in wanted:
            _remove(child)


def _write_job(plan: Plan) -> None:
    listing = plan.listing
    job = {
        "version": 1,
        "repo": listing.repo,
        "revision": listing.revision,
        "commit": listing.commit,
        "models": [f.path for f in plan.selection.models],
        "files": [{"path": f.path, "size": f.size, "key": f.key} for f in plan.fetch + plan.ready],
        "updated_at": utc_now(),
    }
    atomic_write_json(plan.staging / JOB_FILE, job)


def mark_ready(plan: Plan, f: RepoFile) -> None:
    """A fetched, verified and fsynced part becomes ``.ok``."""
    plan.part(f).replace(plan.ok(f))
    fsync_dir(plan.staging)


# --- publishing --------------------------------------------------------------------


def publish(models_dir: Path, plan: Plan) -> list[str]:
    """Move the staged files in; the manifest lists them as pending until the end."""
    listing, selection = plan.listing, plan.selection
    repo_dir = safe_mkdirs(models_dir, listing.repo)
    manifest = _manifest_or_none(repo_dir) or Manifest(listing.repo)
    moving = [f for f in selection.files if f not in plan.present]
    now = utc_now()
    for f in selection.files:
        manifest.files[f.path] = FileRecord(f.size, f.sha256, f.blob_id)
    extras = sorted(f.path for f in selection.extras)
    for m in selection.models:
        old = manifest.models.get(m.path)
        unchanged = m in plan.present and old is not None and old.commit == listing.commit
        pulled_at = old.pulled_at if unchanged and old else now
        manifest.models[m.path] = ModelRecord(extras, listing.revision, listing.commit, pulled_at)
    manifest.pending = sorted(set(manifest.pending) | {f.path for f in moving})
    write_manifest(repo_dir, manifest)  # from here on a crash leaves them hidden
    # Staged files are named by content: two files with the same bytes (two "{}" JSON
    # files) share one staged file, which only the last of them may move away.
    uses = Counter(f.key for f in moving)
    for f in moving:  # extras first, model files last
        folder = safe_mkdirs(repo_dir, f.path.rpartition("/")[0])
        target = folder / f.path.rpartition("/")[2]
        uses[f.key] -= 1
        if uses[f.key]:
            _place_copy(plan.ok(f), target)
        else:
            plan.ok(f).replace(target)
        fsync_dir(folder)
    for f in selection.files:
        manifest.files[f.path].mtime_ns = (repo_dir / f.path).stat().st_mtime_ns
    manifest.pending = sorted(set(manifest.pending) - {f.path for f in selection.files})
    write_manifest(repo_dir, manifest)  # last: the model is complete
    discard(plan.staging)
    return [f"{listing.repo}/{f.path}" for f in moving]


def _place_copy(source: Path, target: Path) -> None:
    """``target`` gets ``source``'s bytes (a hard link when it can), ``source`` stays."""
    temporary = target.with_name(f".{target.name}.rkllmd-copy")
    temporary.unlink(missing_ok=True)
    try:
        temporary.hardlink_to(source)
    except OSError:
        shutil.copyfile(source, temporary)
    temporary.replace(target)


def discard(staging: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(staging)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- start-up cleanup and resumable jobs -------------------------------------------


def _read_job(folder: Path) -> dict[str, Any] | None:
    try:
        job = read_json(folder / JOB_FILE)
        files = job["files"]
        ok = isinstance(job["repo"], str) and isinstance(files, list)
        keys = {str(f["key"]) for f in files} if ok else set()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {**job, "keys": keys} if ok else None


def cleanup_staging(models_dir: Path, keep_seconds: float) -> list[dict[str, Any]]:
    """Remove orphaned staging at start; keep recent resumable parts. Returns those kept."""
    root = staging_root(models_dir)
    if root.is_symlink() or (root.exists() and not root.is_dir()):
        root.unlink()
        return []
    if not root.is_dir():
        return []
    kept = []
    for folder in root.iterdir():
        job = None if folder.is_symlink() or not folder.is_dir() else _read_job(folder)
        age = time.time() - (folder / JOB_FILE).stat().st_mtime if job else 0.0
        if job is None or age > keep_seconds:
            logger.info("removing orphaned download staging %s", folder.name)
            _remove(folder)
            continue
        allowed = {JOB_FILE} | {f"{k}{s}" for k in job["keys"] for s in (".part", ".ok")}
        for child in folder.iterdir():
            if child.name not in allowed:
                _remove(child)
        summary = resumable(folder)
        if summary is not None:
            kept.append(summary)
    return kept


def resumable(folder: Path) -> dict[str, Any] | None:
    """What a new ``pull`` of the repo staged in ``folder`` would resume, if anything."""
    job = _read_job(folder) if folder.is_dir() and not folder.is_symlink() else None
    if job is None:
        return None
    have = sum(_size_of(folder / f"{k}{s}") or 0 for k in job["keys"] for s in (".part", ".ok"))
    return {
        "repo": job["repo"],
        "revision": job.get("revision"),
        "state": "resumable",
        "bytes": have,
        "total": sum(int(f.get("size", 0)) for f in job["files"]),
        "updated_at": job.get("updated_at"),
    }


__all__ = ["MANIFEST_NAME", "Plan", "cleanup_staging", "prepare", "publish", "resumable"]
