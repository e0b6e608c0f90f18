"""A blocking JSON-RPC 2.0 client for the rkllmd control socket.

Framing: one JSON text per line (UTF-8, ``\\n`` terminated) in both directions. Before
the final response (the line whose ``id`` equals the request id) the daemon may send
notifications (``method`` and no ``id``), which are handed to a callback.
"""

from __future__ import annotations

import errno
import grp
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from jsonrpcclient import Error, Ok, parse, request

NotificationHandler = Callable[[str, dict[str, Any]], None]

MAX_LINE_BYTES = 64 * 1024 * 1024
RECV_SIZE = 65536


class ClientError(Exception):
    """Base class for everything this module raises."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DaemonUnreachable(ClientError):
    """The socket is missing, refuses, is forbidden, or the daemon went away."""

    code = "daemon_unreachable"


class DaemonTimeout(DaemonUnreachable):
    """No answer within the timeout."""

    code = "timeout"


class ProtocolError(ClientError):
    """The daemon sent something that is not a JSON-RPC line."""

    code = "protocol_error"


class RpcFailure(ClientError):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, rpc_code: int, message: str, data: Any) -> None:
        super().__init__(message)
        self.rpc_code = rpc_code
        self.data: dict[str, Any] = data if isinstance(data, dict) else {}

    @property
    def code(self) -> str:
        """The stable application code (``data.code``) or ``rpc_error``."""
        code = self.data.get("code")
        return code if isinstance(code, str) else "rpc_error"


def _connect_error(path: str, exc: OSError) -> DaemonUnreachable:
    if isinstance(exc, FileNotFoundError):
        return DaemonUnreachable(f"no control socket at {path} (is rkllmd running?)")
    if isinstance(exc, ConnectionRefusedError):
        return DaemonUnreachable(f"nothing is listening on {path} (is rkllmd running?)")
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        return DaemonUnreachable(_denied(path))
    if isinstance(exc, TimeoutError):
        return DaemonTimeout(f"timed out connecting to {path}")
    reason = exc.strerror or str(exc)
    return DaemonUnreachable(f"cannot connect to {path}: {reason}")


def _denied(path: str) -> str:
    """Which group to join: the socket's own (``socket_group`` of the daemon's config),
    or, when even its folder is closed to us, which folder."""
    try:
        st = Path(path).stat()
    except PermissionError:
        folder = Path(path).parent
        return f"permission denied: {folder} is closed to you (socket {path})"
    except OSError:
        return f"permission denied (socket {path})"
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"permission denied: add yourself to the {group} group (socket {path})"


class Connection:
    """One connection to the daemon; several calls may run on it one after another."""

    def __init__(self, sock: socket.socket, path: str) -> None:
        self._sock = sock
        self._path = path
        self._buffer = bytearray()

    @classmethod
    def open(cls, path: str, timeout: float | None = None) -> Connection:
        """Connect to ``path``; raise :class:`DaemonUnreachable` if that fails."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise _connect_error(path, exc) from None
        return cls(sock, path)

    def close(self) -> None:
        """Close the socket (the daemon aborts whatever this connection started)."""
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        on_notification: NotificationHandler | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Send one request and return its result; raise :class:`RpcFailure` on error."""
        message = request(method, params or None)
        deadline = None if timeout is None else time.monotonic() + timeout
        self._sock.settimeout(timeout)
        self._send(message)
        while True:
            reply = self._read_message(deadline, timeout)
            if _is_notification(reply):
                if on_notification is not None:
                    params_in = reply.get("params")
                    on_notification(str(reply["method"]), _as_dict(params_in))
                continue
            if reply.get("id") == message["id"] or (reply.get("id") is None and "error" in reply):
                return _result_of(reply)

    def _send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self._sock.sendall(data)
        except TimeoutError:
            raise DaemonTimeout(f"timed out sending to {self._path}") from None
        except OSError as exc:
            self._raise_parting_error()
            raise DaemonUnreachable(f"lost the connection to rkllmd: {exc}") from None

    def _raise_parting_error(self) -> None:
        """Raise the error the daemon sent before closing, if it left one (it refuses a
        connection over its cap with one ``too_many_connections`` line, then closes,
        which can break our send)."""
        try:
            self._sock.settimeout(1.0)
            reply = self._read_message(None, None)
        except ClientError:
            return
        if reply.get("id") is None and "error" in reply:
            _result_of(reply)

    def _read_message(self, deadline: float | None, timeout: float | None) -> dict[str, Any]:
        while True:
            line = self._read_line(deadline, timeout).strip()
            if not line:
                continue
            try:
                value = json.loads(line)
            except (UnicodeDecodeError, ValueError):
                raise ProtocolError("the daemon sent a line that is not JSON") from None
            if not isinstance(value, dict):
                raise ProtocolError("the daemon sent a JSON value that is not an object")
            return value

    def _read_line(self, deadline: float | None, timeout: float | None) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > MAX_LINE_BYTES:
                raise ProtocolError("the daemon sent an over-long line")
            self._buffer += self._recv(deadline, timeout)

    def _recv(self, deadline: float | None, timeout: float | None) -> bytes:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonTimeout(f"no answer from rkllmd within {timeout:g} s")
            self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(RECV_SIZE)
        except TimeoutError:
            raise DaemonTimeout(f"no answer from rkllmd within {timeout:g} s") from None
        except OSError as exc:
            raise DaemonUnreachable(f"lost the connection to rkllmd: {exc}") from None
        if not chunk:
            raise DaemonUnreachable("rkllmd closed the connection before answering")
        return chunk


def _is_notification(message: dict[str, Any]) -> bool:
    return "method" in message and "id" not in message


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _result_of(reply: dict[str, Any]) -> Any:
    try:
        response = parse(reply)
    except (KeyError, TypeError):
        raise ProtocolError("the daemon sent a malformed JSON-RPC response") from None
    if isinstance(response, Ok):
        return response.result
    if isinstance(response, Error):
        raise RpcFailure(response.code, str(response.message), response.data)
    raise ProtocolError("the daemon sent a batch response")


def call(
    path: str,
    method: str,
    params: dict[str, Any] | None = None,
    *,
    timeout: float | None = None,
    on_notification: NotificationHandler | None = None,
) -> Any:
    """Open a connection, make one call, close it."""
    with Connection.open(path, timeout) as conn:
        return conn.call(method, params, on_notification=on_notification, timeout=timeout)
