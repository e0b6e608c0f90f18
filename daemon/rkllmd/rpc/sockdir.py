"""The folder of the control socket: made with the right owner and mode, or refused.

A non-root daemon without ``XDG_RUNTIME_DIR`` falls back to ``/tmp/rkllmd-<uid>/``.
Another user can make that folder first, mode 0777, and later replace the socket in
it with their own: the victim's ``rkllmctl`` then talks to them. So the daemon binds
only in a folder that it (or root) owns and that nobody else may write to, unless
the sticky bit keeps others from replacing entries (``/tmp`` itself). ``rkllmctl``
applies the same rule before it connects (ctl/rkllmctl/paths.py).

A folder the daemon makes itself is 0700, or 0755 directly under ``/run``; when
``socket_group`` names a group, the innermost folder is given to it with mode 0750
so that its members can reach the socket (mode 0660, same group).
"""

from __future__ import annotations

import grp
import logging
import os
import stat
from pathlib import Path

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def prepare(folder: Path, group: str | None) -> None:
    """Make ``folder`` if missing (shared with ``group``), then check it is safe."""
    if not folder.exists():
        folder.mkdir(mode=0o755 if folder.parent == Path("/run") else 0o700, parents=True)
        _share(folder, group)
    check(folder)


def check(folder: Path) -> None:
    try:
        st = folder.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot use {folder} for the control socket: {exc.strerror}") from None
    problem = unsafe_reason(st, os.geteuid())
    if problem is not None:
        raise ConfigError(
            f"refusing to put the control socket in {folder}: {problem}; "
            "remove it or set socket (or XDG_RUNTIME_DIR) to a private folder"
        )


def unsafe_reason(st: os.stat_result, uid: int) -> str | None:
    """Why a folder with this ``lstat`` is no place for ``uid``'s socket, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a folder"
    if st.st_uid not in (uid, 0):
        return f"it belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return "others may write to it"
    return None


def _share(folder: Path, group: str | None) -> None:
    if not group:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        return  # the socket keeps its default group too (logged when it is bound)
    try:
        os.chown(folder, -1, gid)
    except PermissionError:
        logger.warning(
            "cannot give %s to group %s; only its owner can reach the socket", folder, group
        )
        return
    if folder.stat().st_mode & 0o777 == 0o700:
        folder.chmod(0o750)  # members may reach the socket, not add anything
