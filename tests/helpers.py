"""Real-process test harness: a daemon on temp dirs, a notify listener, an RPC client."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
# Linux's SO_TIMESTAMP (also its SCM_TIMESTAMP: a struct timeval), missing from the
# socket module of some Python builds.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29)


def model_source() -> Path:
    path = Path(os.environ.get("RKLLMD_TEST_MODEL", REPO / "models" / MODEL_FILE))
    if not path.is_file():
        raise RuntimeError(f"{path} is missing: run `make models` first")
    return path


def place_model(models_dir: Path, name: str = MODEL_FILE) -> Path:
    """Put the real SmolLM2 file into a models dir (hard link when possible)."""
    target = models_dir / name
    try:
        os.link(model_source(), target)
    except OSError:
        shutil.copyfile(model_source(), target)
    past = time.time() - 60  # already settled
    os.utime(target, (past, past))
    return target


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def short_tempdir() -> Path:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix="rk", dir="/tmp"))


def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class RpcError(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(error.get("message"))
        self.error = error
        self.code = error.get("code")
        self.data = error.get("data") or {}


class RpcClient:
    """A deliberately plain JSON-RPC client: one JSON text per line."""

    def __init__(self, path: Path, timeout: float = 120.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout)
            self.sock.connect(str(path))
        except BaseException:
            self.sock.close()  # no unclosed socket (a ResourceWarning, an error here) left
            raise
        self.file = self.sock.makefile("rwb")
        self._ids = iter(range(1, 1 << 30))
        self.notifications: list[dict[str, Any]] = []

    def send_raw(self, data: bytes) -> None:
        self.file.write(data)
        self.file.flush()

    def read_message(self) -> Any:
        line = self.file.readline()
        if not line:
            raise ConnectionError("daemon closed the connection")
        return json.loads(line)

    def call_raw(self, payload: Any) -> Any:
        self.send_raw(json.dumps(payload).encode() + b"\n")
        return self.read_message()

    def start(self, method: str, **params: Any) -> int:
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        self.send_raw(json.dumps(body).encode() + b"\n")
        return request_id

    def finish(self, request_id: int) -> Any:
        while True:
            message = self.read_message()
            if "id" not in message:
                self.notifications.append(message)
                continue
            assert message["id"] == request_id, message
            if "error" in message:
                raise RpcError(message["error"])
            return message["result"]

    def call(self, method: str, **params: Any) -> Any:
        return self.finish(self.start(method, **params))

    def close(self) -> None:
        # Apart: after a broken pipe the buffered writer re-raises on close, and the
        # socket must still be closed (else an unclosed-socket ResourceWarning).
        with contextlib.suppress(OSError):
            self.file.close()
        self.sock.close()


class NotifyListener:
    """Stands in for systemd: collects sd_notify datagrams.

    ``received`` pairs each line with the kernel's receive time of its datagram
    (SO_TIMESTAMP, wall clock), so gaps between notifications are the sender's,
    not this thread's scheduling.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self.received: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        data, ancdata, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
        stamp = time.time()
        for level, kind, value in ancdata:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP:
                seconds, micros = struct.unpack("qq", value[:16])
                stamp = seconds + micros / 1e6
        lines = data.decode("latin-1").split("\n")
        self.received.extend((stamp, line) for line in lines)
        self.messages.extend(lines)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._receive()
            except TimeoutError:
                continue
            except OSError:
                return

    def has(self, line: str) -> bool:
        return line in list(self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self.sock.fileno() < 0:
            return  # closed before (stop() may run twice)
        # Datagrams that arrived after the thread's last read: every one the daemon sent
        # before it exited is in the buffer now, so a test after stop() sees them all.
        self.sock.setblocking(False)
        with contextlib.suppress(OSError):
            while True:
                self._receive()
        self.sock.close()


class DaemonProcess:
    def __init__(
        self,
        models_dir: Path,
        *,
        args: list[str] = (),
        env: dict[str, str] | None = None,
        watchdog_usec: int | None = None,
        socket_path: Path | None = None,
    ) -> None:
        self.dir = short_tempdir()
        self.models_dir = models_dir
        self.socket = socket_path or self.dir / "c.sock"
        self.notify = NotifyListener(self.dir / "n.sock")
        self.log_path = self.dir / "daemon.log"
        self._clients: list[RpcClient] = []
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
        environment.update({"NOTIFY_SOCKET": str(self.notify.path), "RKLLMD_CONFIG": "/dev/null"})
        if watchdog_usec is not None:
            environment["WATCHDOG_USEC"] = str(
                watchdog_usec
            )  # no WATCHDOG_PID: pid unknown before fork
        environment.update(env or {})
        self._environment = environment
        self._args = list(args)
        self._log = self.log_path.open("wb")
        self._spawn()

    def _spawn(self) -> None:
        # Every daemon gets its own port so tests never meet a developer's 8080. The port
        # is free when probed but may be taken before the daemon binds it: wait_ready()
        # then starts the daemon again on another one.
        self.http_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.argv = [
            sys.executable,
            "-m",
            "rkllmd",
            "--models-dir",
            str(self.models_dir),
            "--socket",
            str(self.socket),
            "--listen",
            f"127.0.0.1:{self.http_port}",
            "--log-level",
            "debug",
            *self._args,
        ]
        self.proc = subprocess.Popen(
            self.argv, env=self._environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def _respawn_if_port_taken(self) -> bool:
        """Start again on a new port if the last start lost its port to someone else."""
        if self.proc.returncode != 1 or "address already in use" not in self.log():
            return False
        self._log.seek(0)
        self._log.truncate()
        self.notify.messages.clear()
        self.notify.received.clear()
        self._spawn()
        return True

    def wait_ready(self, timeout: float = 60.0) -> DaemonProcess:
        respawns = 3

        def ready() -> bool:
            nonlocal respawns
            if self.proc.poll() is not None:
                if respawns and self._respawn_if_port_taken():
                    respawns -= 1
                    return False
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log()}")
            return self.notify.has("READY=1")

        wait_for(ready, timeout, "READY=1")
        return self

    def client(self, timeout: float = 120.0) -> RpcClient:
        client = RpcClient(self.socket, timeout)
        self._clients.append(client)  # closed in stop(): tests may drop them anywhere
        return client

    def call(self, method: str, **params: Any) -> Any:
        client = self.client()
        try:
            return client.call(method, **params)
        finally:
            client.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        for client in self._clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return self.proc.returncode


def read_http_response(conn: socket.socket) -> bytes:
    """One whole HTTP response with a Content-Length body (one recv may return a part)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"closed before the end of the headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next((int(x.split(b":")[1]) for x in lines if x.startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        assert chunk, f"closed before the end of the body: {data + body!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def chat_params(content: str = "Say hello", **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "messages": [{"role": "user", "content": content}],
        "temperature": 0.0,
    }
    params.update(extra)
    return params


@contextlib.contextmanager
def running_daemon(models_dir: Path, **kwargs: Any) -> Iterator[DaemonProcess]:
    daemon = DaemonProcess(models_dir, **kwargs)
    try:
        yield daemon.wait_ready()
    finally:
        daemon.stop()


def long_chat_stream(client: Any, max_tokens: int = 2000) -> Any:
    """An OpenAI-client chat stream that keeps generating to ``max_tokens`` (no EOS)."""
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "Say hello"}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
