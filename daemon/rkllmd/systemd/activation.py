"""systemd socket activation (sd_listen_fds(3)) without libsystemd.

systemd passes listening sockets as fds 3..3+LISTEN_FDS-1, with LISTEN_PID set
to our pid and optional colon-separated LISTEN_FDNAMES. ``inherited_sockets()``
takes them once per process (later calls return the same objects), clears the
variables and marks the fds close-on-exec so the worker child inherits none.

Names come from FileDescriptorName=. systemd's default name is the unit name
(``rkllmd.socket``, the same for every listener of one unit) or ``unknown``;
such sockets are classified by family: a Unix stream socket is ``control``, an
INET/INET6 stream socket is ``http``. Any other name is kept as given.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

logger = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3

_taken: dict[str, socket.socket] | None = None


def _name_for(sock: socket.socket, given: str) -> str:
    if given != "unknown" and not given.endswith(".socket"):
        return given
    if sock.type == socket.SOCK_STREAM and sock.family == socket.AF_UNIX:
        return "control"
    if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
        return "http"
    return given


def take_sockets(
    environ: MutableMapping[str, str], start: int = SD_LISTEN_FDS_START
) -> dict[str, socket.socket]:
    """Parse and clear LISTEN_* in ``environ``; return the passed sockets by name."""
    pid, count = environ.pop("LISTEN_PID", ""), environ.pop("LISTEN_FDS", "")
    names = environ.pop("LISTEN_FDNAMES", "").split(":")
    if not (pid.isdigit() and int(pid) == os.getpid() and count.isdigit()):
        return {}
    found: dict[str, socket.socket] = {}
    for index in range(int(count)):
        fd = start + index
        try:
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            logger.warning("LISTEN_FDS: fd %d is not a usable socket: %s", fd, exc)
            continue
        name = _name_for(sock, names[index] if index < len(names) else "unknown")
        if name in found:
            logger.warning("ignoring a second inherited socket named %r (fd %d)", name, fd)
            sock.close()
            continue
        sock.setblocking(False)
        found[name] = sock
        logger.info("inherited %s socket %s from systemd", name, sock.getsockname() or "?")
    return found


def inherited_sockets() -> dict[str, socket.socket]:
    """The sockets systemd passed to this process, e.g. ``{"control": s, "http": s}``."""
    global _taken
    if _taken is None:
        _taken = take_sockets(os.environ)
    return dict(_taken)
