"""Walking the models directory (runs in a worker thread, never on the event loop).

What counts as a model file, which names are spellable, and where symlinks may
lead: everything the registry needs to know about the disk, in one pass.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ..safefs import Folder
from .gguf import HeaderCache
from .metadata import ModelMeta
from .metadata import collect as collect_metadata

logger = logging.getLogger(__name__)

MODEL_EXTENSIONS = (".gguf", ".rkllm")
LORA_FOLDER = "lora"  # top-level folder of adapters, listed by catalog/loras.py
# Multimodal projectors (``*mmproj*.gguf``) give the model next to them its eyes
# (backends/companion.py); they are not models of their own.
PROJECTOR_MARK = "mmproj"
TEMP_SUFFIXES = (".part", ".incomplete", ".tmp", ".partial", ".download")

_MAX_DEPTH = 32  # bind mounts can still form cycles although symlinked dirs are skipped
DRIVE = re.compile(r"[A-Za-z]:")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Seen(NamedTuple):
    """One model file of a walk. A tuple of plain values: the garbage collector stops
    tracking it at its first look, so 100,000 of them per scan never pile up in the
    old generation and trigger full collections (which hold the GIL for seconds)."""

    relpath: str
    realpath: str
    size: int
    mtime_ns: int
    mtime: float


@dataclass(slots=True)
class Walk:
    started: float  # monotonic, before the first stat
    wall: float  # time.time() before the first stat
    finished: float = 0.0  # monotonic, after the last stat
    exists: bool = True
    failed: bool = False  # the root itself could not be listed
    files: list[Seen] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # symlinks leading outside
    unnamable: list[str] = field(default_factory=list)
    meta: dict[str, ModelMeta] = field(default_factory=dict)


def _is_nameable(relpath: str) -> bool:
    """False for names no request could ever spell (see `_validate`)."""
    try:
        relpath.encode("utf-8")  # undecodable bytes arrive as lone surrogates
    except UnicodeEncodeError:
        return False
    return "\\" not in relpath and not CONTROL.search(relpath) and not DRIVE.match(relpath)


def walk(models_dir: Path, warned: set[str], headers: HeaderCache) -> Walk:
    """Everything the models dir holds; ``warned`` keeps metadata warnings to one each,
    ``headers`` remembers GGUF headers already read.

    Folders are opened relative to the root's descriptor without following links
    (safefs.py): a folder swapped for a symlink mid-walk is skipped, never listed."""
    walk = Walk(started=time.monotonic(), wall=time.time())
    root = os.path.realpath(models_dir)
    try:
        top = Folder.open(root)
    except (FileNotFoundError, NotADirectoryError):
        walk.exists = False
    except OSError as exc:
        walk.failed = True
        logger.warning("cannot list the models folder: %s", exc.strerror)
    else:
        with top:
            stack: list[tuple[str, int]] = [("", 0)]
            while stack:
                _scan_dir(top, *stack.pop(), root=root, walk=walk, stack=stack)
        # Files a pull is still publishing (or under an unreadable manifest) stay hidden.
        files = {f.relpath: (f.realpath, f.size, f.mtime_ns) for f in walk.files}
        hidden, walk.meta = collect_metadata(Path(root), files, warned, headers)
        walk.files = [f for f in walk.files if f.relpath not in hidden]
    walk.finished = time.monotonic()
    return walk


def _scan_dir(
    top: Folder,
    rel_dir: str,
    depth: int,
    *,
    root: str,
    walk: Walk,
    stack: list[tuple[str, int]],
) -> None:
    try:
        with top.walk(rel_dir) as folder, os.scandir(folder.fd) as it:
            for de in it:
                if de.name.startswith("."):  # hidden: download staging, editor files
                    continue
                rel = f"{rel_dir}/{de.name}" if rel_dir else de.name
                if de.is_dir(follow_symlinks=False):
                    if not rel_dir and de.name == LORA_FOLDER:
                        continue  # LoRA adapters (catalog/loras.py), not models
                    if depth < _MAX_DEPTH:
                        stack.append((rel, depth + 1))
                elif _is_model_name(de.name.lower()):
                    _visit_file(de, rel, root, walk)
    except OSError as exc:
        walk.failed = walk.failed or not rel_dir
        logger.warning("cannot list models folder %r: %s", rel_dir or ".", exc.strerror)


def _is_model_name(lower: str) -> bool:
    # A model extension (so never a temp suffix), and not a projector.
    return lower.endswith(MODEL_EXTENSIONS) and PROJECTOR_MARK not in lower


def _visit_file(de: os.DirEntry[str], rel: str, root: str, walk: Walk) -> None:
    if not _is_nameable(rel):
        walk.unnamable.append(rel)
        return
    try:
        if de.is_symlink():
            real = _resolve_inside(root, rel)
            if real is None:
                walk.rejected.append(rel)
                return
            st = Path(real).stat()
        else:
            real = f"{root}/{rel}"  # the walk entered no link: the real path
            st = de.stat(follow_symlinks=False)
    except OSError:  # vanished mid-walk or dangling: the next scan decides
        return
    if stat.S_ISREG(st.st_mode):
        walk.files.append(Seen(rel, real, st.st_size, st.st_mtime_ns, st.st_mtime))


def _resolve_inside(root: str, rel: str) -> str | None:
    """The real path of ``root/rel``, or None if a link on the way leads out of ``root``.

    Unlike ``os.path.realpath`` it follows links one at a time and never touches
    (not even lstat) anything outside ``root``: a link pointing out is rejected from
    its text alone. ``root`` must be real, so its ancestors hold no links."""
    current, pending, links = "/", [*root.split("/"), *rel.split("/")], 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        candidate = str(Path(current).parent) if part == ".." else f"{current.rstrip('/')}/{part}"
        if candidate != root and not candidate.startswith(root + "/"):
            if candidate == "/" or root.startswith(candidate.rstrip("/") + "/"):
                current = candidate  # an ancestor of the root: real, nothing to follow
                continue
            return None
        if not Path(candidate).is_symlink():
            current = candidate
            continue
        links += 1
        if links > 40:
            raise OSError("too many levels of symbolic links")  # a loop: skipped like ELOOP
        target = str(Path(candidate).readlink())
        if target.startswith("/"):
            current = "/"
        pending[:0] = target.split("/")
    return current if current.startswith(root + "/") else None


# --- ids and the lookup snapshot ---------------------------------------------------
