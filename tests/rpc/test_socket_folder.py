"""Where the control socket may live: never in a folder another user controls.

A non-root daemon without ``XDG_RUNTIME_DIR`` uses ``/tmp/rkllmd-<uid>/``; another
user can make that folder first (mode 0777) and swap the socket for their own. The
daemon then refuses to start there, and ``rkllmctl`` refuses to connect. A folder
the daemon makes itself is shared with ``socket_group``, and the CLI names the
socket's real group when access is denied. The tests switch users with setpriv.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, free_port, short_tempdir

NOBODY = 65534
OTHER = 12345  # the "attacker": a uid that is neither nobody nor root
USERS_GID = 100
SETPRIV = shutil.which("setpriv")


def _interpreter_runs_as_nobody() -> bool:
    """A pyenv build under /root links a libpython that other users cannot read."""
    if os.geteuid() != 0 or SETPRIV is None:
        return False
    argv = [SETPRIV, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    done = subprocess.run([*argv, sys.executable, "-c", ""], capture_output=True, timeout=60)
    return done.returncode == 0


needs_root = pytest.mark.skipif(
    not _interpreter_runs_as_nobody(),
    reason="switches users: needs root, setpriv and an interpreter other users can run",
)
RKLLMCTL = [sys.executable, "-m", "rkllmctl"]


def as_user(uid: int, argv: list[str], *, groups: str | None = None, **kw: Any) -> Any:
    ids = [f"--reuid={uid}", f"--regid={uid}"]
    ids += [f"--groups={groups}"] if groups else ["--clear-groups"]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.update(kw.pop("env", {}))
    return subprocess.run(
        [str(SETPRIV), *ids, *argv], env=env, capture_output=True, text=True, timeout=60, **kw
    )


@pytest.fixture
def attacker_folder() -> Iterator[Path]:
    """/tmp/rkllmd-65534 made first by another user, open to everyone."""
    folder = Path(f"/tmp/rkllmd-{NOBODY}")
    if folder.exists() or folder.is_symlink():
        pytest.skip(f"{folder} exists on this machine")
    folder.mkdir()
    os.chown(folder, OTHER, OTHER)
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@needs_root
def test_the_daemon_refuses_a_tmp_fallback_folder_of_another_user(
    attacker_folder: Path, models_dir: Path
) -> None:
    models_dir.chmod(0o755)
    models_dir.parent.chmod(0o755)
    argv = [sys.executable, "-m", "rkllmd", "--config", "/dev/null"]
    argv += ["--models-dir", str(models_dir), "--listen", f"127.0.0.1:{free_port()}"]
    done = as_user(NOBODY, argv)  # no XDG_RUNTIME_DIR: the /tmp fallback
    assert done.returncode == 2, done.stderr
    assert f"refusing to put the control socket in {attacker_folder}" in done.stderr
    assert "belongs to another user" in done.stderr and "Traceback" not in done.stderr
    assert list(attacker_folder.iterdir()) == []


@needs_root
def test_rkllmctl_refuses_a_tmp_fallback_folder_of_another_user(attacker_folder: Path) -> None:
    with socket.socket(socket.AF_UNIX) as trap:  # the attacker's stand-in daemon
        trap.bind(str(attacker_folder / "control.sock"))
        os.chmod(attacker_folder / "control.sock", 0o777)
        trap.listen(1)
        trap.settimeout(0.5)
        done = as_user(NOBODY, [*RKLLMCTL, "status"])
        assert done.returncode == 3, done.stderr
        assert "refusing to use" in done.stderr and "belongs to another user" in done.stderr
        with pytest.raises(TimeoutError):
            trap.accept()  # it never connected


@needs_root
def test_a_socket_folder_the_daemon_makes_is_shared_with_socket_group(
    start_daemon: Any, models_dir: Path
) -> None:
    base = short_tempdir()
    base.chmod(0o755)
    path = base / "made" / "control.sock"
    try:
        daemon: DaemonProcess = start_daemon(
            models_dir, socket_path=path, env={"RKLLMD_SOCKET_GROUP": "users"}
        )
        st = path.parent.stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o750, USERS_GID)
        member = as_user(NOBODY, [*RKLLMCTL, "--socket", str(path), "status"], groups="100")
        assert member.returncode == 0, member.stderr
        stranger = as_user(NOBODY, [*RKLLMCTL, "--socket", str(path), "status"])
        assert stranger.returncode == 3
        assert f"{path.parent} is closed to you" in stranger.stderr
        daemon.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@needs_root
def test_rkllmctl_names_the_sockets_own_group(start_daemon: Any, models_dir: Path) -> None:
    base = short_tempdir()
    base.chmod(0o755)
    try:
        path = base / "control.sock"
        start_daemon(models_dir, socket_path=path, env={"RKLLMD_SOCKET_GROUP": "users"})
        done = as_user(NOBODY, [*RKLLMCTL, "--socket", str(path), "status"])
        assert done.returncode == 3
        assert "add yourself to the users group" in done.stderr, done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
