"""Removing models (blocking; runs in the store's remove lane).

A model is named through ``ModelRegistry.resolve`` (which rejects '..', absolute paths
and symlinks leading out). Here every step works on folder descriptors (safefs.py):
each folder on the way is opened without following links, and the unlink names the
file relative to its folder's descriptor. A folder swapped for a symlink at any
moment makes the removal fail; it never deletes anything elsewhere. Only regular
files or symlinks are unlinked (the link, never its target), never a folder with
content, never the models directory itself.

A model published by a pull takes along the technical files the manifest lists for it
(unless another model of the same repo still uses them) and, once the repo has no
model left, the manifest and the now empty folders. A plain model file takes along
its user sidecar ``<stem>.rkllmd.json``.
"""

from __future__ import annotations

import contextlib
import logging
import stat
from collections.abc import Iterator
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
from ..safefs import Folder, is_link_error
from .staging import discard_all

logger = logging.getLogger(__name__)


def _check(rel: str) -> None:
    if not is_safe_relpath(rel) or rel.split("/")[0].startswith("."):
        raise InvalidModelName(f"refusing to remove {rel[:120]!r}")


@contextlib.contextmanager
def _parent(root: Folder, rel: str) -> Iterator[tuple[Folder, str] | None]:
    """The open folder holding ``rel`` and its name there; None if a folder is missing.

    A symlink (or file) where a folder should be raises InvalidModelName."""
    _check(rel)
    folder_rel, _, name = rel.rpartition("/")
    try:
        folder = root.walk(folder_rel)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        if is_link_error(exc):
            raise InvalidModelName(
                f"refusing to remove {rel[:120]!r}: a folder on its path is a link"
            ) from None
        raise
    with folder:
        yield folder, name


def _unlink(root: Folder, rel: str) -> bool:
    with _parent(root, rel) as found:
        if found is None:
            return False
        folder, name = found
        try:
            if stat.S_ISDIR(folder.lstat(name).st_mode):
                return False
            folder.unlink(name)
        except FileNotFoundError:
            return False
    return True


def _unlink_extra(root: Folder, rel: str) -> bool:
    """A file that goes along with a model already removed: a link met on its way
    leaves it in place (logged) instead of failing the removal that did happen."""
    try:
        return _unlink(root, rel)
    except InvalidModelName as exc:
        logger.warning("%s", exc.message)
        return False


def _prune(root: Folder, rel_dir: str) -> None:
    """Remove empty folders from ``rel_dir`` upwards, never ``root`` itself."""
    parts = [p for p in rel_dir.split("/") if p]
    while parts:
        try:
            with _parent(root, "/".join(parts)) as found:
                if found is None:
                    return
                found[0].rmdir(found[1])
        except (OSError, InvalidModelName):  # not empty (user files), gone, or a link
            return
        parts.pop()


def remove_model(models_dir: Path, relpath: str) -> list[str]:
    """Remove one model file and what belongs to it; returns the removed paths."""
    _check(relpath)
    with Folder.open(models_dir) as root:
        return _remove_model(root, relpath)


def _remove_model(root: Folder, relpath: str) -> list[str]:
    repo_rel = repo_dir_of(relpath)
    manifest = _manifest(root, repo_rel)
    inner = relpath[len(repo_rel) + 1 :] if repo_rel else relpath
    if repo_rel and manifest and inner in manifest.models:
        removed = _remove_pulled(root, repo_rel, manifest, inner)
    else:
        removed = [relpath] if _unlink(root, relpath) else []
    stem = relpath.rsplit(".", 1)[0]
    if _unlink_extra(root, f"{stem}{SIDECAR_SUFFIX}"):
        removed.append(f"{stem}{SIDECAR_SUFFIX}")
    _prune(root, relpath.rpartition("/")[0])
    return removed


@contextlib.contextmanager
def _repo_folder(root: Folder, repo_rel: str) -> Iterator[Folder]:
    _check(repo_rel)
    try:
        folder = root.walk(repo_rel)
    except OSError as exc:
        if is_link_error(exc):
            raise InvalidModelName(f"refusing to touch {repo_rel!r}: it is a link") from None
        raise
    with folder:
        yield folder


def _manifest(root: Folder, repo_rel: str | None) -> Manifest | None:
    if repo_rel is None:
        return None
    try:
        with _repo_folder(root, repo_rel) as folder:
            return read_manifest(folder)
    except (InvalidManifest, InvalidModelName, FileNotFoundError):
        return None


def _remove_pulled(root: Folder, repo_rel: str, manifest: Manifest, model: str) -> list[str]:
    keep = manifest.referenced_by_others(model)
    extras = [p for p in manifest.models[model].files if p not in keep]
    doomed = [model, *extras]
    removed = [f"{repo_rel}/{model}"] if _unlink(root, f"{repo_rel}/{model}") else []
    removed += [f"{repo_rel}/{p}" for p in extras if _unlink_extra(root, f"{repo_rel}/{p}")]
    del manifest.models[model]
    for path in doomed:
        manifest.files.pop(path, None)
    if manifest.models:
        try:
            with _repo_folder(root, repo_rel) as folder:
                write_manifest(folder, manifest)
        except InvalidModelName as exc:  # the model is gone; its record goes next time
            logger.warning("%s", exc.message)
    else:
        removed += _remove_repo_rest(root, repo_rel, manifest)
    for path in doomed:
        _prune(root, f"{repo_rel}/{path}".rpartition("/")[0])
    return removed


def _remove_repo_rest(root: Folder, repo_rel: str, manifest: Manifest) -> list[str]:
    """The last model of a pulled repo is gone: its remaining files and the manifest go too."""
    removed = [f"{repo_rel}/{p}" for p in manifest.files if _unlink_extra(root, f"{repo_rel}/{p}")]
    for path in manifest.files:
        _prune(root, f"{repo_rel}/{path}".rpartition("/")[0])
    _unlink_extra(root, f"{repo_rel}/{MANIFEST_NAME}")
    _prune(root, repo_rel)
    return removed


def remove_all(models_dir: Path, relpaths: list[str]) -> list[str]:
    """Every listed model, every pulled repo's leftovers, and all download staging."""
    removed: list[str] = []
    with Folder.open(models_dir) as root:
        for rel in relpaths:
            try:
                _check(rel)
                removed += _remove_model(root, rel)
            except (InvalidModelName, OSError) as exc:
                logger.warning("could not remove %s: %s", rel, exc)
        removed += _purge_manifests(root)
    discard_all(models_dir)
    return removed


def _purge_manifests(root: Folder) -> list[str]:
    """Repos whose publish was interrupted still have files the registry hides."""
    removed: list[str] = []
    for owner in _subdirs(root, ""):
        for repo in _subdirs(root, owner):
            repo_rel = f"{owner}/{repo}"
            manifest = _manifest(root, repo_rel)
            if manifest is not None:
                removed += _remove_repo_rest(root, repo_rel, manifest)
    return removed


def _subdirs(root: Folder, rel: str) -> list[str]:
    """Names of the plain (not hidden, not linked) folders in ``rel``."""
    try:
        with root.walk(rel) as folder:
            return [
                name
                for name in folder.names()
                if not name.startswith(".") and _is_plain_dir(folder, name)
            ]
    except OSError:
        return []


def _is_plain_dir(folder: Folder, name: str) -> bool:
    try:
        return stat.S_ISDIR(folder.lstat(name).st_mode)
    except OSError:
        return False
