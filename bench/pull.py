"""Pull benchmark: throughput through the daemon vs. ``hf_hub_download`` directly.

Usage: ``.venv/bin/python bench/pull.py [--size-mib N | --file PATH] [--runs N]``

Starts the Hub stand-in (tests/store/hubstub.py) in its own process, serving one
repo with ``--file`` (default: a file of ``--size-mib`` random MiB, 512, the size of a
small model: with a 100 MB file on loopback the fixed costs of a pull, one listing
request, two manifest writes and the fsyncs, weigh more than the transfer), and a
real daemon on an empty models dir pointed at it. Then, ``--runs`` times each (best run counts):
(a) ``hf_hub_download`` of the file into a fresh local dir, in this process;
(b) RPC ``pull`` of the repo with progress notifications (listing, download, sha256,
    fsync, publish, listed by the registry), then ``remove`` to start over;
while (b) runs, another connection calls ``status`` back to back.
Prints one JSON line:

    {"bench": "pull", "bytes", "direct_mib_s", "daemon_mib_s", "ratio",
     "progress_max_per_s", "status_ms": {"p50", "p99", "max", "n"}}
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.helpers import DaemonProcess, RpcClient, short_tempdir  # noqa: E402

REPO = "bench/model"
READY_TIMEOUT_S = 60.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(math.ceil(q / 100 * len(ordered)) - 1, 0)]


def start_hub(path: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store.hubstub", REPO, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise RuntimeError("the Hub stand-in did not start")
    return proc, url


def direct(url: str, name: str) -> float:
    from huggingface_hub import hf_hub_download

    target = tempfile.mkdtemp(prefix="rkbench")
    try:
        started = time.perf_counter()
        hf_hub_download(REPO, name, local_dir=target, endpoint=url, token=False)
        return time.perf_counter() - started
    finally:
        shutil.rmtree(target, ignore_errors=True)


class StatusProbe(threading.Thread):
    """``status`` round trips on their own connection while a pull runs."""

    def __init__(self, socket_path: Path) -> None:
        super().__init__(daemon=True)
        self.client = RpcClient(socket_path, timeout=10)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            self.client.call("status")
            self.samples.append((time.perf_counter() - started) * 1000)
            time.sleep(0.005)


def through_daemon(daemon: DaemonProcess) -> tuple[float, list[float], list[float]]:
    """One pull: (seconds, notification times, status latencies in ms)."""
    client = daemon.client(timeout=600)
    probe = StatusProbe(daemon.socket)
    probe.start()
    started = time.perf_counter()
    times: list[float] = []
    request_id = client.start("pull", repo=REPO, progress=True)
    while True:
        message = client.read_message()
        if "id" in message:
            break
        times.append(time.perf_counter())
    took = time.perf_counter() - started
    probe.stop.set()
    probe.join()
    probe.client.close()
    if message.get("id") != request_id or "error" in message:
        raise RuntimeError(f"pull failed: {message}")
    client.call("remove", all=True, force=True)
    client.close()
    return took, times, probe.samples


def max_per_second(times: list[float]) -> int:
    return max((sum(1 for u in times if t <= u < t + 1.0) for t in times), default=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="rkbench"))
    if args.file is None:
        args.file = scratch / "bench.gguf"
        with args.file.open("wb") as handle:
            for _ in range(args.size_mib):
                handle.write(os.urandom(2**20))
    size = args.file.stat().st_size
    hub, url = start_hub(args.file)
    models = short_tempdir() / "models"
    models.mkdir()
    env = {"RKLLMD_HUB__ENDPOINT": url, "RKLLMD_HUB__MIN_FREE_BYTES": "0"}
    daemon = DaemonProcess(models, env=env).wait_ready(READY_TIMEOUT_S)
    try:
        direct_times, runs = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both sides alike
            direct_times.append(direct(url, args.file.name))
            runs.append(through_daemon(daemon))
        direct_s = min(direct_times)
    finally:
        daemon.stop()
        hub.send_signal(signal.SIGTERM)
        hub.wait(10)
        shutil.rmtree(models.parent, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    daemon_s = min(r[0] for r in runs)
    status = [ms for r in runs for ms in r[2]]
    result: dict[str, Any] = {
        "bench": "pull",
        "bytes": size,
        "runs": args.runs,
        "direct_mib_s": round(size / direct_s / 2**20, 1),
        "daemon_mib_s": round(size / daemon_s / 2**20, 1),
        "ratio": round(direct_s / daemon_s, 3),
        "progress_max_per_s": max(max_per_second(r[1]) for r in runs),
        "status_ms": {
            "p50": round(percentile(status, 50), 2),
            "p99": round(percentile(status, 99), 2),
            "max": round(max(status), 2),
            "n": len(status),
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
