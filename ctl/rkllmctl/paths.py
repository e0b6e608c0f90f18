"""Where the control socket lives.

The daemon applies the same rule to choose where to bind (it keeps its own copy so
that ``rkllmctl`` never imports the daemon). Order:

1. ``--socket PATH`` given on the command line;
2. the ``RKLLMD_SOCKET`` environment variable;
3. ``/run/rkllmd/control.sock`` when that file exists (the system service);
4. ``$XDG_RUNTIME_DIR/rkllmd/control.sock`` when ``XDG_RUNTIME_DIR`` is set;
5. ``/tmp/rkllmd-<uid>/control.sock``: used only when that folder belongs to the
   user (or root) and nobody else may write to it; anyone could have made it first
   and put their own socket there (``tmp_problem``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

SYSTEM_SOCKET = "/run/rkllmd/control.sock"
ENV_VAR = "RKLLMD_SOCKET"
SOCKET_NAME = "control.sock"


class SocketChoice(NamedTuple):
    """A resolved socket path and which rule produced it."""

    path: str
    source: str  # "flag" | "env" | "system" | "xdg" | "tmp"


def choose_socket(
    flag: str | None,
    env: Mapping[str, str],
    *,
    system_path: str = SYSTEM_SOCKET,
    uid: int | None = None,
) -> SocketChoice:
    """Apply the resolution order and say which rule won."""
    if flag:
        return SocketChoice(flag, "flag")
    from_env = env.get(ENV_VAR, "")
    if from_env:
        return SocketChoice(from_env, "env")
    if Path(system_path).exists():
        return SocketChoice(system_path, "system")
    runtime_dir = env.get("XDG_RUNTIME_DIR", "")
    if runtime_dir:
        return SocketChoice(str(Path(runtime_dir) / "rkllmd" / SOCKET_NAME), "xdg")
    user = os.getuid() if uid is None else uid
    return SocketChoice(f"/tmp/rkllmd-{user}/{SOCKET_NAME}", "tmp")  # noqa: S108


def resolve_socket_path(
    flag: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    system_path: str = SYSTEM_SOCKET,
    uid: int | None = None,
) -> str:
    """The control socket path (``env`` defaults to ``os.environ``)."""
    environ = os.environ if env is None else env
    return choose_socket(flag, environ, system_path=system_path, uid=uid).path


def tmp_problem(path: str, uid: int | None = None) -> str | None:
    """Why the ``/tmp`` fallback socket at ``path`` must not be trusted, or None.

    The daemon refuses to bind there under the same rule (rpc/sockdir.py)."""
    folder = Path(path).parent
    try:
        st = folder.lstat()
    except FileNotFoundError:
        return None  # nothing there: connecting fails with "no control socket"
    except OSError as exc:
        return f"{folder} cannot be checked ({exc.strerror})"
    user = os.getuid() if uid is None else uid
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a plain folder"
    if st.st_uid not in (user, 0):
        return f"{folder} belongs to another user (uid {st.st_uid})"
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        return f"others may write to {folder}"
    return None
