"""Where the control socket lives.

The daemon applies the same rule to choose where to bind (it keeps its own copy so
that ``rkllmctl`` never imports the daemon). Order:

1. ``--socket PATH`` given on the command line;
2. the ``RKLLMD_SOCKET`` environment variable;
3. ``/run/rkllmd/control.sock`` when that file exists (the system service);
4. ``$XDG_RUNTIME_DIR/rkllmd/control.sock`` when ``XDG_RUNTIME_DIR`` is set;
5. ``/tmp/rkllmd-<uid>/control.sock``.
"""

from __future__ import annotations

import os
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
