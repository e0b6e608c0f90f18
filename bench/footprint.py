"""Footprint benchmark: memory and idle CPU of the daemon, without and with a model.

Usage: ``.venv/bin/python bench/footprint.py [--seconds 30] [--model PATH]``

Starts real daemons on private temp directories (short socket paths) and reads
``/proc`` only; nothing talks to the daemon while CPU time is being counted.

1. ``idle``: an empty models directory, no model loaded. The daemon's RSS, PSS
   and CPU % over ``--seconds`` (targets: RSS <= 60 MB, CPU <= 0.5 %).
2. ``loaded``: the SmolLM2 GGUF (``models/`` by default) loaded with ``--load``;
   the same figures for the daemon and, separately, for its worker process.

CPU % is (utime + stime) of the process over the window, as a share of one CPU.
MB are MiB. Prints one JSON line; not a test, nothing here asserts a figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rkllmctl.client import ClientError, Connection
from rkllmd.config import ENV_PREFIX

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
READY_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # after startup/load, before the window opens
CLK_TCK = os.sysconf("SC_CLK_TCK")


def venv_bin(name: str) -> str:
    beside = Path(sys.executable).parent / name
    return str(beside if beside.exists() else REPO / ".venv" / "bin" / name)


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- /proc ------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of ``pid`` (all its threads), in clock ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the name may contain spaces
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def memory_mib(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    values = {}
    for line in status.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    rollup = Path(f"/proc/{pid}/smaps_rollup")
    pss = None
    if rollup.exists():
        for line in rollup.read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    return {
        "rss_mb": round(values["VmRSS"] / 1024, 1),
        "peak_rss_mb": round(values["VmHWM"] / 1024, 1),
        "pss_mb": round(pss / 1024, 1) if pss is not None else None,
        "threads": values["Threads"],
    }


def measure(pids: dict[str, int], seconds: float) -> dict[str, Any]:
    """CPU % of each process over one window, then its memory."""
    start = {name: cpu_ticks(pid) for name, pid in pids.items()}
    began = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - began
    figures: dict[str, Any] = {}
    for name, pid in pids.items():
        used = (cpu_ticks(pid) - start[name]) / CLK_TCK
        figures[name] = {"cpu_pct": round(100 * used / elapsed, 3), **memory_mib(pid)}
    return figures


# --- daemons ----------------------------------------------------------------------------


def daemon_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env["RKLLMD_CONFIG"] = "/dev/null"  # built-in defaults, not /etc/rkllmd/rkllmd.toml
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(name, None)
    return env


class Daemon:
    def __init__(self, work: Path, models: Path, extra: list[str]) -> None:
        self.socket = work / "c.sock"
        self.log = (work / "daemon.log").open("wb")
        command = [
            venv_bin("rkllmd"),
            "--models-dir", str(models),
            "--socket", str(self.socket),
            "--log-level", "warning",
            "--listen", f"127.0.0.1:{free_tcp_port()}",
            *extra,
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            command, env=daemon_env(), stdout=self.log, stderr=subprocess.STDOUT
        )

    def status(self) -> dict[str, Any] | None:
        try:
            with Connection.open(str(self.socket), timeout=2.0) as conn:
                result = conn.call("status", timeout=2.0)
        except ClientError:
            return None
        return result if isinstance(result, dict) else None

    def wait_for(self, state: str) -> dict[str, Any]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"bench: rkllmd exited early with code {self.proc.returncode}")
            status = self.status()
            if status is not None and status.get("state") == state:
                return status
            if status is not None and status.get("state") == "failed":
                raise SystemExit(f"bench: the load failed: {status.get('reason')}")
            time.sleep(0.1)
        raise SystemExit(f"bench: rkllmd did not reach {state!r} within {READY_TIMEOUT_S:g} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def place(model: Path, models: Path) -> None:
    target = models / model.name
    try:
        os.link(model, target)  # keeps the old mtime: listed at the first scan
    except OSError:
        shutil.copy2(model, target)


def scenario(work: Path, seconds: float, model: Path | None) -> dict[str, Any]:
    models = work / "models"
    models.mkdir()
    extra: list[str] = []
    if model is not None:
        place(model, models)
        extra = ["--load", model.stem]
    daemon = Daemon(work, models, extra)
    try:
        status = daemon.wait_for("ready" if model is not None else "idle")
        pids = {"daemon": daemon.proc.pid}
        if model is not None:
            pids["worker"] = int(status["worker_pid"])
        time.sleep(SETTLE_S)
        figures = measure(pids, seconds)
        if model is not None:
            figures["model"] = status["model"]
        return figures
    finally:
        daemon.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF to load")
    args = parser.parse_args()
    if not args.model.is_file():
        raise SystemExit(f"bench: {args.model} is missing (run `make models`)")
    result: dict[str, Any] = {"bench": "footprint", "seconds": args.seconds}
    for name, model in (("idle", None), ("loaded", args.model.resolve())):
        work = Path(tempfile.mkdtemp(prefix="rkf", dir="/tmp"))  # short: sun_path is 108 bytes
        try:
            result[name] = scenario(work, args.seconds, model)
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
