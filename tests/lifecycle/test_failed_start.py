"""A start that fails leaves nothing behind: no control socket, no folder it made."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import short_tempdir


@pytest.fixture
def work() -> Iterator[Path]:
    path = short_tempdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run_daemon(work: Path, models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    env.update({"RKLLMD_CONFIG": "/dev/null"})
    env.pop("NOTIFY_SOCKET", None)
    argv = [sys.executable, "-m", "rkllmd", "--models-dir", str(models), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_http_bind_failure_removes_the_control_socket(work: Path, models_dir: Path) -> None:
    run_dir = work / "run"  # made by the daemon for its socket: gone again after
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_daemon(
            work, models_dir, "--socket", str(run_dir / "c.sock"), "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 1, result.stderr
    assert "address already in use" in result.stderr.lower()
    assert not (run_dir / "c.sock").exists()
    assert not run_dir.exists()


def test_a_folder_that_was_there_stays(work: Path, models_dir: Path) -> None:
    run_dir = work / "run"
    run_dir.mkdir()
    (run_dir / "keep").write_text("not the daemon's")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_daemon(
            work, models_dir, "--socket", str(run_dir / "c.sock"), "--listen", f"127.0.0.1:{port}"
        )
    assert result.returncode == 1, result.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["keep"]
