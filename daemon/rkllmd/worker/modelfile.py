"""The model file a worker loads: exactly the file the registry listed, opened safely.

Between the scan that listed ``<models>/a.gguf`` and the load, a member of the models
dir's group could rename a symlink to a file outside over it, or a FIFO (the open
would block the load until its timeout). So the worker opens the file itself, the
checked way (safefs.py): every folder from the models root down with ``O_NOFOLLOW``,
the file with ``O_NOFOLLOW | O_NONBLOCK``, and ``fstat`` must say regular file.

Backends take a path, not a descriptor, and look for files next to the model (an
``.rkllm`` model's ``tokenizer.json``, a chat template, the parts of a split GGUF).
So the backend gets a private folder that mirrors the model's: each name is a symlink
to ``/proc/self/fd/N``, a descriptor opened and checked the same way. Opening such a
path reaches the very file that was checked, whatever happens to the name after.
The folder and the descriptors live as long as the worker (one model per worker).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from ..errors import LoadFailed
from ..safefs import Folder, is_link_error

SIBLING_MAX_BYTES = 64 * 1024 * 1024  # tokenizers, templates, configs: never other models
# Vision companions of any size: a llama.cpp projector (``*mmproj*.gguf``) and an RKLLM
# model's ``.rknn`` encoder (see backends/companion.py).
_COMPANION = re.compile(r"(.*mmproj.*\.gguf|.*\.rknn)", re.IGNORECASE)
MAX_SIBLINGS = 64
_SPLIT = re.compile(r"(.*)-\d{5}-of-\d{5}\.gguf", re.IGNORECASE)


class PinnedModel:
    """The backend's path to the checked model file, and what keeps it valid."""

    def __init__(self, path: Path, folder: str, fds: list[int]) -> None:
        self.path = path
        self._folder = folder
        self._fds = fds

    def close(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


def pin(root: str, realpath: str) -> PinnedModel:
    """Open ``realpath`` (a file the registry listed below ``root``) the checked way."""
    real_root = os.path.realpath(root)
    rel = os.path.relpath(realpath, real_root)
    if rel in (".", "..") or rel.startswith(("../", "/")):
        raise LoadFailed("the model file is not inside the models directory")
    folder_rel, _, name = rel.rpartition("/")
    fds: list[int] = []
    try:
        with Folder.open(real_root) as top, top.walk(folder_rel) as folder:
            fds.append(folder.open_read(name))
            names = [name]
            for sibling, fd in _siblings(folder, name):
                names.append(sibling)
                fds.append(fd)
    except FileNotFoundError:
        _close(fds)
        raise LoadFailed("the model file is gone; rescan and try again") from None
    except OSError as exc:
        _close(fds)
        if is_link_error(exc):
            raise LoadFailed(
                "the model file changed since it was listed: it is now a link or not a regular file"
            ) from None
        raise LoadFailed(f"the model file cannot be opened ({exc.strerror})") from None
    private = tempfile.mkdtemp(prefix="rkllmd-model-")
    for entry, fd in zip(names, fds, strict=True):
        (Path(private) / entry).symlink_to(f"/proc/self/fd/{fd}")
    return PinnedModel(Path(private) / name, private, fds)


def _siblings(folder: Folder, model: str) -> list[tuple[str, int]]:
    """Checked descriptors of the small regular files next to the model (and of the
    other parts of a split GGUF); anything else there is simply not visible."""
    split = _SPLIT.fullmatch(model)
    found: list[tuple[str, int]] = []
    for name in sorted(folder.names()):
        if len(found) >= MAX_SIBLINGS:
            break
        if name == model or name.startswith("."):
            continue
        part = split is not None and name.startswith(split.group(1) + "-")
        try:
            st = folder.lstat(name)
            large_ok = part or _COMPANION.fullmatch(name) is not None
            if not stat.S_ISREG(st.st_mode) or (st.st_size > SIBLING_MAX_BYTES and not large_ok):
                continue
            found.append((name, folder.open_read(name)))
        except OSError:  # vanished, swapped: not visible to the backend
            continue
    return found


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
