"""Control-path benchmark: ``rkllmctl status`` wall time and JSON-RPC round trips.

Usage: ``.venv/bin/python bench/control.py [--socket PATH]``

Without ``--socket`` it starts a real daemon on an empty models directory and a
private socket, waits until ``status`` answers (up to 30 s), measures, and stops the
daemon with SIGTERM. Prints one JSON line:

    {"bench": "control", "rkllmctl_status_ms": {"p50", "p90", "max"},
     "rpc_roundtrip_us": {"p50", "p99"}}

(a) wall time of ``rkllmctl --socket S status`` run 30 times as a subprocess (after
    two uncounted warm-up runs; bytecode caching is enabled for these runs through a
    temporary ``PYTHONPYCACHEPREFIX``, as an installed package ships .pyc files, even
    when the caller's environment sets ``PYTHONDONTWRITEBYTECODE``);
(b) ``status`` round trips over one persistent connection (2,000 requests, after a
short warm-up), timed around the client call (request build, send, read, parse).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
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

CTL_RUNS = 30
CTL_WARMUP = 2
RPC_REQUESTS = 2000
RPC_WARMUP = 50
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0


def venv_bin(name: str) -> str:
    """A console script next to this interpreter, else in the repository's .venv."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return str(Path(__file__).resolve().parents[1] / ".venv" / "bin" / name)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(math.ceil(q / 100 * len(ordered)) - 1, 0)
    return ordered[rank]


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def status_answers(path: str) -> bool:
    try:
        with Connection.open(path, timeout=1.0) as conn:
            conn.call("status", timeout=1.0)
    except ClientError:
        return False
    return True


def launch_daemon(work: str) -> tuple[subprocess.Popen[bytes], str]:
    models = os.path.join(work, "models")
    os.mkdir(models)
    path = os.path.join(work, "c.sock")
    command = [
        venv_bin("rkllmd"),
        "--models-dir", models,
        "--socket", path,
        "--log-level", "warning",
        # A free HTTP port so that the bench never collides with a running daemon.
        "--listen", f"127.0.0.1:{free_tcp_port()}",
    ]  # fmt: skip
    # The daemon's stdout goes to our stderr: our stdout carries only the JSON line.
    return subprocess.Popen(command, stdout=sys.stderr.buffer), path


def wait_ready(proc: subprocess.Popen[bytes], path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"bench: rkllmd exited early with code {proc.returncode}")
        if status_answers(path):
            return
        time.sleep(0.05)
    raise SystemExit(f"bench: rkllmd did not answer status within {READY_TIMEOUT_S:g} s")


def stop_daemon(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print("bench: rkllmd ignored SIGTERM; killing it", file=sys.stderr)
        proc.kill()
        proc.wait()


def ctl_env(pycache: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def run_status(command: list[str], env: dict[str, str]) -> float:
    """One ``rkllmctl status`` run; its wall time in ms."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, check=False, env=env)
    elapsed = (time.perf_counter() - start) * 1000
    if done.returncode != 0:
        error = done.stderr.decode(errors="replace").strip()
        raise SystemExit(f"bench: rkllmctl status exited {done.returncode}: {error}")
    return elapsed


def time_rkllmctl(path: str, pycache: str, runs: int = CTL_RUNS) -> dict[str, float]:
    command = [venv_bin("rkllmctl"), "--socket", path, "status"]
    env = ctl_env(pycache)
    for _ in range(CTL_WARMUP):
        run_status(command, env)
    samples = [run_status(command, env) for _ in range(runs)]
    return {
        "p50": round(percentile(samples, 50), 1),
        "p90": round(percentile(samples, 90), 1),
        "max": round(max(samples), 1),
    }


def time_roundtrips(path: str, requests: int = RPC_REQUESTS) -> dict[str, float]:
    samples = []
    with Connection.open(path, timeout=10.0) as conn:
        for _ in range(RPC_WARMUP):
            conn.call("status", timeout=10.0)
        for _ in range(requests):
            start = time.perf_counter_ns()
            conn.call("status", timeout=10.0)
            samples.append((time.perf_counter_ns() - start) / 1000)
    return {"p50": round(percentile(samples, 50), 1), "p99": round(percentile(samples, 99), 1)}


def measure(path: str, work: str) -> dict[str, Any]:
    return {
        "bench": "control",
        "rkllmctl_status_ms": time_rkllmctl(path, os.path.join(work, "pyc")),
        "rpc_roundtrip_us": time_roundtrips(path),
    }


def with_daemon(work: str) -> dict[str, Any]:
    proc, path = launch_daemon(work)
    try:
        wait_ready(proc, path)
        return measure(path, work)
    finally:
        stop_daemon(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--socket", metavar="PATH", help="use a running daemon")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="rkb", dir="/tmp")  # short: AF_UNIX paths are limited
    try:
        result = measure(args.socket, work) if args.socket else with_daemon(work)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
