"""The control socket: creation with safe permissions, framing, limits, peers.

One JSON text per line. Each request runs in its own task (bounded per
connection) so a client can pipeline; answers and notifications share one
write lock. A peer that goes away cancels nothing by itself, but the next
notification write fails and that cancels the call (and aborts generation).

Limits (config ``[control]``): at most ``max_connections`` at once, a connection
beyond that gets one ``too_many_connections`` error and is closed; a connection
with no call in flight is closed after ``idle_seconds`` without a request. A
call in flight (a streamed chat, a load or pull sending progress) keeps its
connection however long it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import select
import socket
import stat
import struct
import sys
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ControlSection
from ..errors import AlreadyRunning, ConfigError, TooManyConnections
from ..wirejson import dumps_line
from . import sockdir
from .dispatch import Dispatcher
from .errors import INVALID_REQUEST, error_response, rpc_code
from .methods import CallContext, Peer

logger = logging.getLogger(__name__)

# A chat call carries its images inline (base64): a 12 MB photo fits.
MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_INFLIGHT_PER_CONNECTION = 8
HANGUP_POLL_SECONDS = 0.25
# A flood of refused connections logs one line per this many seconds, with a count.
REFUSAL_LOG_SECONDS = 10.0


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _claim_path(path: Path) -> None:
    """Remove a stale socket left by a dead daemon; refuse to touch anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)
        return
    finally:
        probe.close()
    raise AlreadyRunning(f"another rkllmd is already answering on {path}")


def missing_dirs(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, innermost first."""
    missing = []
    for folder in path.parents:
        if folder.exists():
            break
        missing.append(folder)
    return missing


def bind_control_socket(path: Path, group: str | None) -> socket.socket:
    sockdir.prepare(path.parent, group)  # made right, or refused (another user's /tmp folder)
    _claim_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes the file 0660 from its first instant: no chmod race.
    old = os.umask(0o117)
    try:
        sock.bind(str(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    try:
        _set_group(path, group)
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        path.unlink(missing_ok=True)
        raise
    return sock


def _set_group(path: Path, group: str | None) -> None:
    if not group:
        return
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        logger.debug("group %s does not exist; socket keeps its default group", group)
        return
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        logger.warning("cannot give the control socket to group %s", group)


class Connection:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._lock = asyncio.Lock()

    async def send(self, message: Any) -> None:
        data = dumps_line(message)
        async with self._lock:
            if self._writer.is_closing():
                raise ConnectionResetError("control client went away")
            self._writer.write(data)
            await self._writer.drain()

    async def notify(self, method: str, params: dict[str, Any]) -> None:
        await self.send({"jsonrpc": "2.0", "method": method, "params": params})


class RefusalLog:
    """Logs refused connections without letting a flood flood the journal."""

    def __init__(self) -> None:
        self._last = -REFUSAL_LOG_SECONDS
        self._suppressed = 0

    def refused(self, peer: Peer, limit: int) -> None:
        now = time.monotonic()
        if now - self._last < REFUSAL_LOG_SECONDS:
            self._suppressed += 1
            return
        more = (
            f" ({self._suppressed} more refused since the last report)" if self._suppressed else ""
        )
        logger.warning(
            "control socket: refused a connection from pid %d uid %d: %d connections open, "
            "the limit (control.max_connections)%s",
            peer.pid,
            peer.uid,
            limit,
            more,
        )
        self._last, self._suppressed = now, 0


class ControlServer:
    def __init__(
        self,
        path: Path,
        dispatcher: Dispatcher,
        *,
        group: str | None,
        limits: Callable[[], ControlSection] = ControlSection,
    ) -> None:
        self.path = path
        self._dispatcher = dispatcher
        self._group = group
        self._limits = limits  # read per connection: a reload (SIGHUP) applies at once
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._owns_path = True
        self._made: list[Path] = []  # folders start() created for the socket
        self._refusals = RefusalLog()

    async def start(self, inherited: socket.socket | None = None) -> None:
        """Listen on ``inherited`` (socket activation: never unlinked by us) or bind our own."""
        self._owns_path = inherited is None
        if inherited is not None:
            self.path = Path(inherited.getsockname())
        else:
            self._made = missing_dirs(self.path)
        # Python 3.13 unlinks a Unix server's socket file when the server closes
        # (cleanup_socket), even systemd's: which would leave rkllmd.socket listening
        # on a path nobody can reach. stop_accepting removes only our own.
        keep_file: dict[str, Any] = {"cleanup_socket": False} if sys.version_info >= (3, 13) else {}
        try:
            sock = inherited or bind_control_socket(self.path, self._group)
            self._server = await asyncio.start_unix_server(
                self._on_connect, sock=sock, limit=MAX_LINE_BYTES, **keep_file
            )
        except BaseException:
            self._remove_folders()  # a failed bind leaves no socket file of its own
            raise
        logger.info("control socket listening on %s", self.path)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
            if self._owns_path:  # systemd's socket file stays for the next start
                with contextlib.suppress(OSError):
                    self.path.unlink()
                self._remove_folders()

    def _remove_folders(self) -> None:
        """The folders start() made for the socket, if nobody put anything else there."""
        for folder in self._made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._made = []

    async def close(self, grace: float = 2.0) -> None:
        """Let calls that are finishing send their answers, then drop everyone."""
        await self.stop_accepting()
        if self._calls:
            await asyncio.wait(self._calls, timeout=grace)
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        limits = self._limits()
        if len(self._connections) >= limits.max_connections:
            await self._refuse(writer, limits.max_connections)
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer, limits.idle_seconds)
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _refuse(self, writer: asyncio.StreamWriter, limit: int) -> None:
        self._refusals.refused(peer_of(writer.get_extra_info("socket")), limit)
        error = TooManyConnections(
            f"too many control connections ({limit} open); try again later", limit=limit
        )
        with contextlib.suppress(ConnectionError):
            writer.write(
                dumps_line(error_response(None, rpc_code(error), error.message, error.to_data()))
            )
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, idle_seconds: float
    ) -> None:
        conn = Connection(writer)
        ctx = CallContext(peer_of(writer.get_extra_info("socket")), conn.notify)
        slots = asyncio.Semaphore(MAX_INFLIGHT_PER_CONNECTION)
        calls: set[asyncio.Task[None]] = set()
        idle = IdleClock(idle_seconds, calls)
        try:
            while (line := await idle.bound(self._read_line(reader, conn))) is not None:
                if not line.strip():
                    continue
                await slots.acquire()
                call = asyncio.create_task(self._call(line, ctx, conn))
                calls.add(call)
                self._calls.add(call)
                call.add_done_callback(self._finished(calls, slots))
                call.add_done_callback(idle.touch)
            # EOF: a half-closed client still reads its answers; one that hung up
            # entirely cannot, and its calls (and generations) are cancelled.
            await self._until_done_or_hangup(calls, writer.get_extra_info("socket"))
        finally:
            for call in calls:
                call.cancel()

    @staticmethod
    async def _until_done_or_hangup(calls: set[asyncio.Task[None]], sock: socket.socket) -> None:
        if sock.fileno() < 0:
            # A write to the gone client already failed and the transport closed its
            # socket: the client hung up, nobody can read what is left.
            return
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLHUP)
        while calls:
            if any(event & (select.POLLHUP | select.POLLNVAL) for _, event in poller.poll(0)):
                logger.debug("control client hung up with %d calls pending", len(calls))
                return  # the caller's finally cancels what is left
            await asyncio.wait(calls, timeout=HANGUP_POLL_SECONDS)

    def _finished(
        self, calls: set[asyncio.Task[None]], slots: asyncio.Semaphore
    ) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            calls.discard(task)
            self._calls.discard(task)
            slots.release()

        return done

    async def _read_line(self, reader: asyncio.StreamReader, conn: Connection) -> bytes | None:
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial or None
        except asyncio.LimitOverrunError:
            limit_kib = MAX_LINE_BYTES // 1024
            with contextlib.suppress(ConnectionError):
                await conn.send(
                    error_response(
                        None, INVALID_REQUEST, f"Invalid Request: line longer than {limit_kib} KiB"
                    )
                )
            return None
        except ConnectionError:
            return None

    async def _call(self, line: bytes, ctx: CallContext, conn: Connection) -> None:
        try:
            answer = await self._dispatcher.handle(line, ctx)
            if answer is not None:
                await conn.send(answer)
        except ConnectionError:
            logger.debug("control client went away before its answer")


class IdleClock:
    """Ends a connection's wait for its next request once it has been idle too long.

    Idle means no call in flight and nothing received: the clock restarts with
    every request and whenever a call ends, and never runs out while a call is
    in flight (a streamed chat or a progress follower can last as long as it
    needs).
    """

    def __init__(self, seconds: float, calls: set[asyncio.Task[None]]) -> None:
        self._seconds = seconds
        self._calls = calls
        self._since = time.monotonic()

    def touch(self, _task: object = None) -> None:
        self._since = time.monotonic()

    async def bound(self, read: Any) -> bytes | None:
        """``read``'s line, or None once the connection has idled out (logged)."""
        if not self._seconds:
            line: bytes | None = await read
            return line
        pending = asyncio.ensure_future(read)
        try:
            while True:
                if self._calls:  # wake when a call ends: the idle clock starts then
                    await asyncio.wait({pending, *self._calls}, return_when=FIRST_COMPLETED)
                else:
                    left = self._since + self._seconds - time.monotonic()
                    if left <= 0:
                        logger.debug("control connection idle for %.0f s: closed", self._seconds)
                        return None
                    await asyncio.wait({pending}, timeout=left)
                if pending.done():
                    self.touch()
                    result: bytes | None = pending.result()
                    return result
        finally:
            pending.cancel()
