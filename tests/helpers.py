"""Real-process test harness: a daemon on temp dirs, a notify listener, an RPC client."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
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
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
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
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


class NotifyListener:
    """Stands in for systemd: collects sd_notify datagrams."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode("latin-1").split("\n"))

    def has(self, line: str) -> bool:
        return line in list(self.messages)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
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
        # Every daemon gets its own port so tests never meet a developer's 8080.
        self.http_port = free_port()
        self.http_url = f"http://127.0.0.1:{self.http_port}"
        self.argv = [
            sys.executable,
            "-m",
            "rkllmd",
            "--models-dir",
            str(models_dir),
            "--socket",
            str(self.socket),
            "--listen",
            f"127.0.0.1:{self.http_port}",
            "--log-level",
            "debug",
            *args,
        ]
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env=environment, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60.0) -> DaemonProcess:
        def ready() -> bool:
            if self.proc.poll() is not None:
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
