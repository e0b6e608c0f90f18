"""Socket activation: LISTEN_* parsing in-process, then real sockets handed to a real
daemon the way systemd does it (fds 3.., LISTEN_PID = the daemon's own pid)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.systemd.activation import take_sockets

from tests.helpers import REPO, NotifyListener, short_tempdir, wait_for

HIGH_FD = 900  # a free range for the in-process tests


def _listening_unix(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    return sock


def _listening_tcp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _place(socks: list[socket.socket]) -> None:
    for index, sock in enumerate(socks):
        os.dup2(sock.fileno(), HIGH_FD + index)


def test_sockets_are_named_by_fdname_or_family(workdir: Path) -> None:
    unix, tcp, extra = _listening_unix(workdir / "a.sock"), _listening_tcp(), _listening_tcp()
    _place([unix, tcp, extra])
    env = {
        "LISTEN_PID": str(os.getpid()),
        "LISTEN_FDS": "3",
        "LISTEN_FDNAMES": "rkllmd.socket:rkllmd.socket:metrics",
        "OTHER": "x",
    }
    found = take_sockets(env, start=HIGH_FD)
    try:
        assert set(found) == {"control", "http", "metrics"}
        assert found["control"].getsockname() == str(workdir / "a.sock")
        assert found["http"].getsockname() == tcp.getsockname()
        assert env == {"OTHER": "x"}  # cleared, so the worker child never sees them
        assert not os.get_inheritable(HIGH_FD)
    finally:
        for sock in (*found.values(), unix, tcp, extra):
            sock.close()


def test_explicit_names_win_over_family(workdir: Path) -> None:
    unix = _listening_unix(workdir / "b.sock")
    _place([unix])
    env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "http"}
    found = take_sockets(env, start=HIGH_FD)
    assert list(found) == ["http"]
    found["http"].close()
    unix.close()


@pytest.mark.parametrize("pid", ["1", "", "nope"])
def test_fds_for_another_process_are_ignored(pid: str) -> None:
    env = {"LISTEN_PID": pid, "LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:http"}
    assert take_sockets(env, start=HIGH_FD) == {}
    assert env == {}


# What systemd does between fork and exec: sockets to fds 3.., LISTEN_PID = own pid.
EXEC_WITH_FDS = """
import fcntl, os, sys
fds = [fcntl.fcntl(int(fd), fcntl.F_DUPFD_CLOEXEC, 100) for fd in sys.argv[1].split(",")]
for index, fd in enumerate(fds):
    os.dup2(fd, 3 + index)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2], sys.argv[2:])
"""


class ActivatedDaemon:
    """rkllmd started like systemd starts it: sockets at fds 3.., LISTEN_PID=$$ via exec."""

    def __init__(
        self,
        workdir: Path,
        socks: list[socket.socket],
        *,
        names: str,
        args: list[str],
        extra_env: dict[str, str] | None = None,
    ):
        self.notify = NotifyListener(workdir / f"n{len(list(workdir.iterdir()))}.sock")
        self.log_path = workdir / "daemon.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RKLLMD_", "LISTEN_"))}
        env.update(
            {
                "NOTIFY_SOCKET": str(self.notify.path),
                "RKLLMD_CONFIG": "/dev/null",
                "LISTEN_FDS": str(len(socks)),
                "LISTEN_FDNAMES": names,
                "PYTHONPATH": str(REPO / "daemon"),
                **(extra_env or {}),
            }
        )
        fds = ",".join(str(s.fileno()) for s in socks)
        argv = [
            sys.executable,
            "-c",
            EXEC_WITH_FDS,
            fds,
            sys.executable,
            "-m",
            "rkllmd",
            "--models-dir",
            str(workdir / "models"),
            "--log-level",
            "debug",
            *args,
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=[s.fileno() for s in socks],
            )

    def wait_ready(self) -> ActivatedDaemon:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            return self.notify.has("READY=1")

        wait_for(ready, 60, "READY=1")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # never left running: the caller's assert reports it
                self.proc.wait()
        self.notify.close()
        return self.proc.returncode


def _request(path: Path, method: str = "status") -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.settimeout(60)
        client.connect(str(path))
        client.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method}).encode() + b"\n")
    except BaseException:
        client.close()
        raise
    return client


def _answer(client: socket.socket) -> dict[str, object]:
    with client, client.makefile("rb") as stream:
        return json.loads(stream.readline())  # type: ignore[no-any-return]


def test_daemon_serves_inherited_control_socket_across_restarts(workdir: Path) -> None:
    (workdir / "models").mkdir()
    path = workdir / "control.sock"
    own_path = workdir / "own.sock"  # what the daemon would bind without activation
    args = ["--socket", str(own_path)]
    # No HTTP server: this test is about the control socket, and a port probed free here
    # could be taken by the time the daemon binds it (the HTTP socket's inheritance is
    # test_daemon_serves_http_on_inherited_tcp_socket's).
    no_http = {"RKLLMD_HTTP__ENABLED": "false"}
    with _listening_unix(path) as control:
        early = _request(path)  # in the backlog before any daemon exists
        first = ActivatedDaemon(
            workdir, [control], names="rkllmd.socket", args=args, extra_env=no_http
        )
        try:
            first.wait_ready()
            assert _answer(early)["result"]["state"] == "idle"  # type: ignore[index]
            assert not own_path.exists(), "the daemon bound its own socket despite LISTEN_FDS"
            assert "inherited control socket" in first.log()
        finally:
            early.close()
            assert first.stop() == 0
        assert path.exists(), "the daemon unlinked a socket it received by activation"

        waiting = _request(path)  # no daemon: the kernel queues it in the backlog
        second = ActivatedDaemon(workdir, [control], names="control", args=args, extra_env=no_http)
        try:
            second.wait_ready()
            answer = _answer(waiting)
            assert answer["id"] == 1 and answer["result"]["state"] == "idle"  # type: ignore[index]
        finally:
            waiting.close()
            assert second.stop() == 0


def _http_server_present() -> bool:
    return any(p.name != "__init__.py" for p in (REPO / "daemon/rkllmd/http").glob("*.py"))


@pytest.mark.skipif(not _http_server_present(), reason="the HTTP server has not landed yet")
def test_daemon_serves_http_on_inherited_tcp_socket(workdir: Path) -> None:
    (workdir / "models").mkdir()
    control, http = _listening_unix(workdir / "control.sock"), _listening_tcp()
    host, port = http.getsockname()
    with control, http:  # closed, and the daemon stopped, whatever fails
        daemon: ActivatedDaemon | None = None
        try:
            with socket.create_connection((host, port), timeout=60) as waiting:
                waiting.sendall(f"GET /health HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
                # --listen names the same port: binding it again would fail, so this
                # proves it is inherited.
                daemon = ActivatedDaemon(
                    workdir,
                    [control, http],
                    names="rkllmd.socket:rkllmd.socket",
                    args=["--listen", f"{host}:{port}"],
                )
                daemon.wait_ready()
                with waiting.makefile("rb") as stream:
                    status_line = stream.readline()
            assert status_line.split()[1] in (b"200", b"503"), status_line
        finally:
            if daemon is not None:
                assert daemon.stop() == 0


def test_inherited_public_http_socket_needs_an_api_key(workdir: Path) -> None:
    """The loopback-only rule applies to the address systemd bound, not to http.listen."""
    (workdir / "models").mkdir()
    control = _listening_unix(workdir / "control.sock")
    public = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with control, public:
        public.bind(("0.0.0.0", 0))  # a public address is the point of the test
        public.listen(4)
        daemon = ActivatedDaemon(workdir, [control, public], names="control:http", args=[])
        try:
            assert daemon.proc.wait(60) == 2
            assert "non-loopback" in daemon.log() and "api_key" in daemon.log()
        finally:
            daemon.stop()  # closes its notify listener (and ends the daemon, had it not)
