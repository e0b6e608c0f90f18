"""Removing models (blocking; runs in a worker thread).

A model is named through ``ModelRegistry.resolve`` (which rejects '..', absolute paths
and symlinks leading out); here every path is checked again against the real models
directory before anything is unlinked: no symlinked folder on the way, only regular
files or symlinks (the link is removed, never its target), never the directory itself.

A model published by a pull takes along the technical files the manifest lists for it
(unless another model of the same repo still uses them) and, once the repo has no
model left, the manifest and the now empty folders. A plain model file takes along
its user sidecar ``<stem>.rkllmd.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from ..catalog.manifest import (
    MANIFEST_NAME,
    InvalidManifest,
    Manifest,
    is_safe_relpath,
    read_manifest,
    repo_dir_of,
    write_manifest,
)
from ..catalog.metadata import SIDECAR_SUFFIX
from ..errors import InvalidModelName
from .staging import discard, staging_root

logger = logging.getLogger(__name__)


def _real_root(models_dir: Path) -> Path:
    return Path(os.path.realpath(models_dir))


def _checked(root: Path, rel: str) -> Path:
    """``root/rel`` after checking it cannot be anything but a file below ``root``."""
    if not is_safe_relpath(rel) or rel.split("/")[0].startswith("."):
        raise InvalidModelName(f"refusing to remove {rel[:120]!r}")
    path = root / rel
    if os.path.realpath(path.parent) != str(path.parent):
        raise InvalidModelName(f"refusing to remove {rel[:120]!r}: a folder on its path is a link")
    return path


def _unlink(root: Path, rel: str) -> bool:
    path = _checked(root, rel)
    try:
        if path.is_dir() and not path.is_symlink():
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _prune(root: Path, rel_dir: str) -> None:
    """Remove empty folders from ``rel_dir`` upwards, never ``root`` itself."""
    parts = [p for p in rel_dir.split("/") if p]
    while parts:
        folder = _checked(root, "/".join(parts))
        try:
            folder.rmdir()
        except OSError:  # not empty (user files), gone, or not a folder
            return
        parts.pop()


def remove_model(models_dir: Path, relpath: str) -> list[str]:
    """Remove one model file and what belongs to it; returns the removed paths."""
    root = _real_root(models_dir)
    _checked(root, relpath)
    repo_rel = repo_dir_of(relpath)
    manifest = _manifest(root, repo_rel)
    inner = relpath[len(repo_rel) + 1 :] if repo_rel else relpath
    if repo_rel and manifest and inner in manifest.models:
        removed = _remove_pulled(root, repo_rel, manifest, inner)
    else:
        removed = [relpath] if _unlink(root, relpath) else []
    stem = relpath.rsplit(".", 1)[0]
    if _unlink(root, f"{stem}{SIDECAR_SUFFIX}"):
        removed.append(f"{stem}{SIDECAR_SUFFIX}")
    _prune(root, relpath.rpartition("/")[0])
    return removed


def _manifest(root: Path, repo_rel: str | None) -> Manifest | None:
    if repo_rel is None:
        return None
    try:
        return read_manifest(_checked(root, repo_rel))
    except InvalidManifest:
        return None


def _remove_pulled(root: Path, repo_rel: str, manifest: Manifest, model: str) -> list[str]:
    keep = manifest.referenced_by_others(model)
    doomed = [model] + [p for p in manifest.models[model].files if p not in keep]
    removed = [f"{repo_rel}/{p}" for p in doomed if _unlink(root, f"{repo_rel}/{p}")]
    del manifest.models[model]
    for path in doomed:
        manifest.files.pop(path, None)
    if manifest.models:
        write_manifest(root / repo_rel, manifest)
    else:
        removed += _remove_repo_rest(root, repo_rel, manifest)
    for path in doomed:
        _prune(root, f"{repo_rel}/{path}".rpartition("/")[0])
    return removed


def _remove_repo_rest(root: Path, repo_rel: str, manifest: Manifest) -> list[str]:
    """The last model of a pulled repo is gone: its remaining files and the manifest go too."""
    removed = [f"{repo_rel}/{p}" for p in manifest.files if _unlink(root, f"{repo_rel}/{p}")]
    for path in manifest.files:
        _prune(root, f"{repo_rel}/{path}".rpartition("/")[0])
    _unlink(root, f"{repo_rel}/{MANIFEST_NAME}")
    _prune(root, repo_rel)
    return removed


def remove_all(models_dir: Path, relpaths: list[str]) -> list[str]:
    """Every listed model, every pulled repo's leftovers, and all download staging."""
    root = _real_root(models_dir)
    removed: list[str] = []
    for rel in relpaths:
        try:
            removed += remove_model(models_dir, rel)
        except (InvalidModelName, OSError) as exc:
            logger.warning("could not remove %s: %s", rel, exc)
    removed += _purge_manifests(root)
    discard(staging_root(root))
    return removed


def _purge_manifests(root: Path) -> list[str]:
    """Repos whose publish was interrupted still have files the registry hides."""
    removed: list[str] = []
    for owner in _subdirs(root):
        for repo in _subdirs(owner):
            repo_rel = f"{owner.name}/{repo.name}"
            manifest = _manifest(root, repo_rel)
            if manifest is not None:
                removed += _remove_repo_rest(root, repo_rel, manifest)
    return removed


def _subdirs(folder: Path) -> list[Path]:
    with contextlib.suppress(OSError):
        return [
            p
            for p in folder.iterdir()
            if not p.name.startswith(".") and p.is_dir() and not p.is_symlink()
        ]
    return []
