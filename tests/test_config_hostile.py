"""Config files that no parser should choke on: at start (exit 2 with a message) and
on SIGHUP (the running configuration stays, and READY=1 follows RELOADING=1)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DaemonProcess, wait_for

BAD_FILES = {
    "nested": (b"a = " + b"[" * 50_000 + b"]" * 50_000 + b"\n", "nested deeper than 64 levels"),
    "nested-64": (b"a = " + b"[" * 70 + b"]" * 70 + b"\n", "nested deeper than 64 levels"),
    "not-utf8": (b'log_level = "\xff\xfe"\n', "is not UTF-8 text"),
    "not-toml": (b"log_level = \n", "is not valid TOML"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_a_bad_config_file_stops_the_start_with_exit_2(
    tmp_path: Path, models_dir: Path, kind: str
) -> None:
    raw, message = BAD_FILES[kind]
    config = tmp_path / "rkllmd.toml"
    config.write_bytes(raw)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RKLLMD_")}
    argv = [sys.executable, "-m", "rkllmd", "--config", str(config)]
    argv += ["--models-dir", str(models_dir), "--socket", str(tmp_path / "c.sock")]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_fifo_as_config_file_is_refused(tmp_path: Path, models_dir: Path) -> None:
    config = tmp_path / "rkllmd.toml"
    os.mkfifo(config)
    argv = [sys.executable, "-m", "rkllmd", "--config", str(config)]
    argv += ["--models-dir", str(models_dir), "--socket", str(tmp_path / "c.sock")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)  # never blocks
    assert done.returncode == 2 and "is not a regular file" in done.stderr


@pytest.mark.parametrize("kind", ["nested", "not-utf8"])
def test_a_bad_file_on_sighup_keeps_the_config_and_ends_the_reload(
    start_daemon: Any, tmp_path: Path, models_dir: Path, kind: str
) -> None:
    config = tmp_path / "rkllmd.toml"
    config.write_text("[queue]\nmax_waiting = 3\n")
    daemon: DaemonProcess = start_daemon(models_dir, env={"RKLLMD_CONFIG": str(config)})
    config.write_bytes(BAD_FILES[kind][0])
    os.kill(daemon.proc.pid, signal.SIGHUP)

    def reload_ended() -> bool:
        lines = list(daemon.notify.messages)
        if "RELOADING=1" not in lines:
            return False
        return "READY=1" in lines[lines.index("RELOADING=1") :]

    wait_for(reload_ended, 30, "READY=1 after RELOADING=1")
    log = daemon.log()
    assert "reload failed, keeping the running configuration" in log and "Traceback" not in log
    assert daemon.call("status")["queue"]["max"] == 3
