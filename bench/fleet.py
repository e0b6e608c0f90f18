"""Fleet figures: HAProxy (docs/scale-out.md's configuration) in front of 1, 2, 3 daemons.

Usage: ``.venv/bin/python bench/fleet.py [--rounds 3] [--seconds 20] [--clients 6]``

Every daemon serves the librkllmrt C double at a fixed 20 ms per token (50 tok/s,
one generation at a time, as one NPU). The same number of clients stream chats of
100 tokens in a loop through HAProxy against 1, 2 and 3 instances, interleaved
over ``--rounds``. Aggregate throughput is the tokens of the answers completed in
the window over its length. Then one run with 9 clients on 3 instances kills one
daemon (SIGKILL) mid-stream: requests lost, requests HAProxy sent again to another
board, and how long until its health check marked the board DOWN.
Prints one JSON line; medians with min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.harness import Fleet, Outcome, fleet, kill_during_streams, stream_once  # noqa: E402

TOKEN_DELAY_US = 20_000
TOKENS = 100
# One HAProxy log line: ... Tr/Tw/Tc/Tr/Ta status ... act/fe/be/srv/retries queue "METHOD
RETRIES = re.compile(r" \d+/\d+/\d+/\d+/(\+?)(\d+) \d+/\d+ \"")


async def load(f: Fleet, clients: int, seconds: float) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    until = time.monotonic() + seconds

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < until:
            outcome = Outcome(time.monotonic())
            await stream_once(session, f.url, TOKENS, outcome)
            outcomes.append(outcome)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    elapsed = time.monotonic() - started
    done = [o for o in outcomes if o.ok]
    return {
        "tok_s": len(done) * TOKENS / elapsed,
        "requests": len(outcomes),
        "failed": len(outcomes) - len(done),
    }


def throughput(rounds: int, seconds: float, clients: int) -> dict[str, Any]:
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: [], 3: []}
    for _ in range(rounds):
        for size in runs:
            with fleet(size, token_delay_us=TOKEN_DELAY_US) as f:
                runs[size].append(asyncio.run(load(f, clients, seconds)))
    nominal = 1e6 / TOKEN_DELAY_US
    figures: dict[str, Any] = {}
    for size, results in runs.items():
        rates = [r["tok_s"] for r in results]
        figures[str(size)] = {
            "tok_s_median": round(statistics.median(rates), 1),
            "tok_s_min": round(min(rates), 1),
            "tok_s_max": round(max(rates), 1),
            "of_nominal": round(statistics.median(rates) / (nominal * size), 3),
            "requests": sum(r["requests"] for r in results),
            "failed": sum(r["failed"] for r in results),
        }
    return figures


def watch_down(f: Fleet, name: str, since: list[float], seen: list[float]) -> None:
    while not since:
        time.sleep(0.01)
    while f.proxy.states().get(name) != "DOWN":
        time.sleep(0.05)
    seen.append(time.monotonic() - since[0])


def kill_run() -> dict[str, Any]:
    with fleet(3, token_delay_us=TOKEN_DELAY_US) as f:
        killed_at: list[float] = []
        down_after: list[float] = []
        original_kill = f.kill

        def kill(name: str) -> None:
            original_kill(name)
            killed_at.append(time.monotonic())

        f.kill = kill  # type: ignore[method-assign]
        watcher = threading.Thread(target=watch_down, args=(f, "b2", killed_at, down_after))
        watcher.start()
        outcomes, killed = asyncio.run(kill_during_streams(f, "b2", clients=9, after_kill=5.0))
        watcher.join(30)
        log = f.proxy.log()
    redispatched = sum(1 for m in RETRIES.finditer(log) if m.group(1) == "+")
    in_flight = [
        o
        for o in outcomes
        if o.served_by == "b2" and o.first_byte and o.first_byte < killed
        if o.ended is not None and o.ended >= killed
    ]
    return {
        "clients": 9,
        "instances": 3,
        "requests": len(outcomes),
        "lost": sum(1 for o in outcomes if not o.ok),
        "streaming_on_killed_at_kill": len(in_flight),
        "sent_again_by_haproxy": redispatched,
        "after_kill_requests": sum(1 for o in outcomes if o.started > killed),
        "after_kill_failed": sum(1 for o in outcomes if o.started > killed and not o.ok),
        "marked_down_after_s": round(down_after[0], 2) if down_after else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    figures = {
        "bench": "fleet",
        "token_delay_us": TOKEN_DELAY_US,
        "tokens_per_request": TOKENS,
        "clients": args.clients,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "throughput_by_instances": throughput(args.rounds, args.seconds, args.clients),
        "kill": kill_run(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
