"""Benchmark: how long a rescan of 100,000 model files stalls the event loop.

Run as `.venv/bin/python bench/rescan.py [--models N] [--rounds R]`. Builds a models
dir of N tiny files (backdated, so every one is listed), then runs R rescans in
process while a ticker on the same event loop wakes every 5 ms and records how late
it woke: the longest lateness is the longest stall a scan caused. Also prints the
size of a "model not found" error's JSON (its id list is capped). One JSON line.
Not a test: nothing here asserts a duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from rkllmd.catalog.registry import ModelRegistry
from rkllmd.errors import ModelNotFound

TICK_S = 0.005


def make_models(root: Path, count: int) -> None:
    past = time.time() - 3600
    for i in range(count):
        path = root / f"bench-{i:06d}.gguf"
        path.write_bytes(b"GGUF\x03\x00\x00\x00")
        os.utime(path, (past, past))


def make_extra(root: Path, i: int) -> None:
    path = root / f"extra-{i:03d}.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    past = time.time() - 3600
    os.utime(path, (past, past))


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    while not stop.is_set():
        due = time.monotonic() + TICK_S
        await asyncio.sleep(TICK_S)
        lateness.append(time.monotonic() - due)


async def measure(root: Path, rounds: int) -> dict[str, object]:
    registry = ModelRegistry(root)
    started = time.monotonic()
    await registry.scan()
    first = time.monotonic() - started
    stop, lateness = asyncio.Event(), []
    tick = asyncio.create_task(ticker(stop, lateness))
    scans = []
    for i in range(rounds):
        # A rescan that finds one file more, as after a copy: a new set to publish.
        make_extra(root, i)
        t0 = time.monotonic()
        await registry.scan()
        scans.append(time.monotonic() - t0)
    stop.set()
    await tick
    try:
        registry.resolve("no-such-model")
        error_bytes = 0
    except ModelNotFound as exc:
        error_bytes = len(json.dumps({"message": exc.message, "data": exc.to_data()}))
    return {
        "models": len(registry.entries()),
        "first_scan_s": round(first, 2),
        "rescan_median_s": round(statistics.median(scans), 2),
        "loop_stall_max_ms": round(max(lateness) * 1000, 1),
        "loop_stall_p99_ms": round(sorted(lateness)[int(len(lateness) * 0.99)] * 1000, 1),
        "ticks": len(lateness),
        "not_found_error_bytes": error_bytes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="rkbench-"))
    try:
        make_models(base, args.models)
        print(json.dumps(asyncio.run(measure(base, args.rounds))))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
