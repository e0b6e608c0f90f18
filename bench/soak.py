"""Soak: mixed traffic against one daemon on the librkllmrt test double.

Usage: ``.venv/bin/python bench/soak.py [--minutes 30] [--interval 3]
[--snapshot-minutes 5] [--keep-snapshots DIR]``

Bounded: a fixed number of client tasks for a fixed time. The traffic mixes
complete SSE streams, streams whose client vanishes mid-way (or while queued),
non-streamed chats against a second model (model switches), and `status` /
`/health` polls. A sampler reads the daemon's RSS and fd count every
``--interval`` seconds; the least-squares slopes (bytes/min, fds/min) over the
samples after the first minute's warm-up tell whether anything leaks.

With ``--snapshot-minutes N`` (5 by default, 0 turns it off) the daemon runs with
tracemalloc (``_RKLLMD_TRACEMALLOC``, see ``rkllmd.memtrace``) and dumps a
snapshot at the start and every N minutes (SIGUSR1); the curve of Python-traced
memory next to RSS, and the allocation sites that grew most between the first
snapshot after warm-up and the last, name what (if anything) keeps growing.
Tracing costs CPU and its own RSS, so compare RSS slopes only between runs
with the same setting.

Prints one JSON line: request counts by outcome (2xx, 503 = intended queue
refusals, other 5xx, client-side errors), the slopes, first/last samples, and
with snapshots the curve and the top growing sites.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.build_double import double_library, write_model  # noqa: E402
from tests.helpers import DaemonProcess, short_tempdir  # noqa: E402

MAIN = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
OTHER = "Llama-3.2-1B-Instruct_W8A8_RK3588"


def proc_status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def proc_sample(pid: int) -> tuple[int, int]:
    rss = proc_status(pid, "VmRSS") * 1024
    return rss, len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_by_minute(samples: list[tuple[float, int, int]], every: float) -> dict[str, int]:
    """RSS (KiB) of the first sample at or after each ``every``-minute mark, and the last."""
    marks: dict[str, int] = {}
    for seconds, rss, _ in samples:
        mark = int(seconds / 60 // every * every)
        marks.setdefault(str(mark), rss // 1024)
    marks[f"{samples[-1][0] / 60:.1f}"] = samples[-1][1] // 1024
    return marks


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


class Snapshots:
    """The daemon's tracemalloc dumps: asked for with SIGUSR1, read back here."""

    # Allocations of the tracing and import machinery, not of the daemon's work.
    NOISE = ("<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>", "<unknown>")

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.taken: list[tuple[float, int, int]] = []  # (minute, rss, fds) at each dump
        self.threads: list[int] = []  # the daemon's thread count at each dump

    async def take(self, pid: int, minute: float) -> None:
        count = len(list(self.directory.glob("snapshot-*.pickle")))
        rss, fds = proc_sample(pid)
        self.threads.append(proc_status(pid, "Threads"))
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 120
        while len(list(self.directory.glob("snapshot-*.pickle"))) <= count:
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon wrote no tracemalloc snapshot")
            await asyncio.sleep(0.2)
        self.taken.append((minute, rss, fds))

    def load(self, index: int) -> tracemalloc.Snapshot:
        snapshot = tracemalloc.Snapshot.load(str(self.directory / f"snapshot-{index:03d}.pickle"))
        noise = [tracemalloc.Filter(False, name) for name in self.NOISE]
        return snapshot.filter_traces([*noise, tracemalloc.Filter(False, tracemalloc.__file__)])

    def report(self, warm_minutes: float) -> dict[str, Any]:
        snapshots = [self.load(i) for i in range(len(self.taken))]
        curve = [
            {
                "minute": round(minute, 1),
                "rss_kib": rss // 1024,
                "traced_kib": sum(s.size for s in snap.statistics("filename")) // 1024,
                "fds": fds,
                "threads": threads,
            }
            for (minute, rss, fds), threads, snap in zip(
                self.taken, self.threads, snapshots, strict=True
            )
        ]
        base = next((i for i, t in enumerate(self.taken) if t[0] >= warm_minutes), 0)
        grown = snapshots[-1].compare_to(snapshots[base], "lineno")
        top = [
            {
                "site": str(stat.traceback[0]),
                "size_diff_kib": round(stat.size_diff / 1024, 1),
                "count_diff": stat.count_diff,
                "size_kib": round(stat.size / 1024, 1),
            }
            for stat in grown[:12]
            if stat.size_diff > 0
        ]
        paths = snapshots[-1].compare_to(snapshots[base], "traceback")
        paths = [p for p in paths if p.size_diff > 0]
        return {
            "curve": curve,
            "growth_from_minute": curve[base]["minute"],
            "top_growth_sites": top,
            "top_growth_tracebacks": [
                {"size_diff_kib": round(p.size_diff / 1024, 1), "frames": p.traceback.format()}
                for p in paths[:3]
            ],
        }


class Soak:
    def __init__(
        self,
        daemon: DaemonProcess,
        seconds: float,
        interval: float,
        snapshots: Snapshots | None = None,
        snapshot_seconds: float = 0.0,
    ) -> None:
        self.daemon = daemon
        self.url = daemon.http_url
        self.until = time.monotonic() + seconds
        self.interval = interval
        self.snapshots = snapshots
        self.snapshot_seconds = snapshot_seconds
        self.counts: dict[str, int] = {
            "2xx": 0,
            "503": 0,
            "other_5xx": 0,
            "4xx": 0,
            "client_error": 0,
            "vanished": 0,
            "status_calls": 0,
        }
        self.samples: list[tuple[float, int, int]] = []
        self.rng = random.Random(1)

    def count(self, status: int) -> None:
        if 200 <= status < 300:
            self.counts["2xx"] += 1
        elif status == 503:
            self.counts["503"] += 1
        elif status >= 500:
            self.counts["other_5xx"] += 1
        else:
            self.counts["4xx"] += 1

    def body(self, model: str, tokens: int, stream: bool) -> dict[str, Any]:
        text = f"soak {self.rng.random():.6f} [[repeat:{tokens}]]"
        return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}

    async def streamer(self, session: aiohttp.ClientSession) -> None:
        while time.monotonic() < self.until:
            try:
                body = self.body(MAIN, self.rng.randint(5, 40), True)
                async with session.post(f"{self.url}/v1/chat/completions", json=body) as resp:
                    async for _ in resp.content:
                        pass
                    self.count(resp.status)
            except aiohttp.ClientError:
                self.counts["client_error"] += 1
            await asyncio.sleep(self.rng.uniform(0, 0.2))

    async def vanisher(self) -> None:
        while time.monotonic() < self.until:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.daemon.http_port)
                data = json.dumps(self.body(MAIN, 200, True)).encode()
                writer.write(
                    b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\n"
                    + f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await asyncio.sleep(self.rng.uniform(0.05, 1.5))
                writer.transport.abort()
                self.counts["vanished"] += 1
            except OSError:
                self.counts["client_error"] += 1
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))

    async def switcher(self, session: aiohttp.ClientSession) -> None:
        while time.monotonic() < self.until:
            await asyncio.sleep(self.rng.uniform(3, 8))
            try:
                body = self.body(OTHER, 5, False)
                async with session.post(f"{self.url}/v1/chat/completions", json=body) as resp:
                    payload = await resp.json()
                    self.count(resp.status)
                    if resp.status == 200 and payload["model"] != OTHER:
                        self.counts.setdefault("wrong_model", 0)
                        self.counts["wrong_model"] += 1
            except aiohttp.ClientError:
                self.counts["client_error"] += 1

    async def poller(self, session: aiohttp.ClientSession) -> None:
        reader, writer = await asyncio.open_unix_connection(str(self.daemon.socket))
        n = 0
        while time.monotonic() < self.until:
            n += 1
            writer.write(
                json.dumps({"jsonrpc": "2.0", "id": n, "method": "status"}).encode() + b"\n"
            )
            answer = json.loads(await reader.readline())
            self.counts["status_calls"] += "result" in answer
            async with session.get(f"{self.url}/health") as resp:
                await resp.read()
            await asyncio.sleep(0.5)
        writer.close()

    async def sampler(self) -> None:
        start = time.monotonic()
        while time.monotonic() < self.until:
            rss, fds = proc_sample(self.daemon.proc.pid)
            self.samples.append((time.monotonic() - start, rss, fds))
            await asyncio.sleep(self.interval)

    async def snapshotter(self) -> None:
        """A dump at the start, every ``snapshot_seconds``, and one as the traffic ends."""
        if self.snapshots is None:
            return
        start = time.monotonic()
        await self.snapshots.take(self.daemon.proc.pid, 0.0)
        while True:
            left = self.until - time.monotonic()
            due = self.snapshot_seconds - (time.monotonic() - start) % self.snapshot_seconds
            if left < due:
                break
            await asyncio.sleep(due)
            await self.snapshots.take(self.daemon.proc.pid, (time.monotonic() - start) / 60)
        await asyncio.sleep(max(0.0, self.until - time.monotonic()))
        await self.snapshots.take(self.daemon.proc.pid, (time.monotonic() - start) / 60)

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await asyncio.gather(
                *(self.streamer(session) for _ in range(4)),
                *(self.vanisher() for _ in range(2)),
                self.switcher(session),
                self.poller(session),
                self.sampler(),
                self.snapshotter(),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument(
        "--snapshot-minutes", type=float, default=5.0, help="tracemalloc dump period; 0 = off"
    )
    parser.add_argument("--keep-snapshots", type=Path, help="keep the dumps in this folder")
    args = parser.parse_args()
    models = short_tempdir() / "models"
    models.mkdir()
    write_model(models)
    write_model(models, f"{OTHER}.rkllm")
    env = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLM_DOUBLE_TOKEN_DELAY_US": "5000",
        "RKLLMD_QUEUE__MAX_WAITING": "4",
    }
    snapshots = None
    if args.snapshot_minutes > 0:
        dumps = args.keep_snapshots or models.parent / "tracemalloc"
        dumps.mkdir(parents=True, exist_ok=True)
        snapshots = Snapshots(dumps)
        env["_RKLLMD_TRACEMALLOC"] = str(dumps)
    daemon = DaemonProcess(models, env=env, args=["--load", MAIN]).wait_ready()
    try:
        soak = Soak(daemon, args.minutes * 60, args.interval, snapshots, args.snapshot_minutes * 60)
        asyncio.run(soak.run())
        alive = daemon.proc.poll() is None
        status = daemon.call("status")
    finally:
        code = daemon.stop()
    warm_seconds = min(60.0, args.minutes * 60 / 4)
    traced = snapshots.report(warm_seconds / 60) if snapshots else {}
    shutil.rmtree(models.parent, ignore_errors=True)
    warm = [s for s in soak.samples if s[0] >= warm_seconds]
    rss_slope = slope([(t / 60, rss) for t, rss, _ in warm])
    fd_slope = slope([(t / 60, fds) for t, _, fds in warm])
    first, last = soak.samples[0], soak.samples[-1]
    print(
        json.dumps(
            {
                "bench": "soak",
                "minutes": args.minutes,
                "samples": len(soak.samples),
                "counts": soak.counts,
                "generations": status["counters"],
                "rss_slope_bytes_per_min": round(rss_slope),
                "fd_slope_per_min": round(fd_slope, 3),
                "rss_kib_by_minute": rss_by_minute(soak.samples, args.snapshot_minutes or 5.0),
                "rss_first_kib": first[1] // 1024,
                "rss_last_kib": last[1] // 1024,
                "rss_max_kib": max(s[1] for s in soak.samples) // 1024,
                "fds_first": first[2],
                "fds_last": last[2],
                "fds_max": max(s[2] for s in soak.samples),
                "daemon_alive": alive,
                "exit_code": code,
                "tracemalloc": traced or None,
            }
        )
    )


if __name__ == "__main__":
    main()
