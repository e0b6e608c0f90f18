"""How long a cancel takes to reach ``rkllm_abort`` (issue 18, item 3).

Usage: ``.venv/bin/python bench/npu_cancel.py [--rounds N] [--tree NAME=DIR]...``

Drives the RKLLM backend in process on the librkllmrt double, as the worker does:
``generate`` on one thread, its text encoded and written to a pipe that another
thread drains, and the cancel set from a third thread once enough text has
arrived, like the worker's reader when the daemon says the client went away. The
figure is the time from ``cancel.set()`` to the double's first ``rkllm_abort``
of the run (both CLOCK_MONOTONIC), at 25 ms/token (the emit thread is idle
between tokens) and at 100 us/token (the runtime's thread and the emit thread
both want the GIL all the time: the worst case for a third thread that needs it
to call ``rkllm_abort``). Also how long the hidden-state callback of one embedding
input (512 tokens x 896 floats) holds the runtime, and how long after a run's
last callback ``generate`` returns (the end of the reply; the next request in
the queue cannot start before), over 10 replies of 12 tokens at 25 ms/token.
``--tree`` runs another checkout's daemon code in a subprocess (``PYTHONPATH``),
rounds interleaved. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ABORT = -1  # the double's line for the first rkllm_abort of a run
# delay per token (us) -> cancel once this much text has arrived. 100 us/token keeps
# the runtime's thread and the emit thread busy all the time (10,000 tok/s).
CANCEL_AFTER_CHARS = {25_000: 10 * len(" tok"), 100: 500 * len(" tok")}
REPLY_TOKENS = 3_000
EMBED_DIM = 896  # Qwen2.5-0.5B's hidden size
EMBED_TOKENS = 512  # the double counts 4 bytes of input as one token
EMBED = -1  # --one EMBED: the hidden-state callback's hold instead of a cancel
END = -2  # --one END: how long after the run's last callback generate() returns
END_REPLIES = 10


def embed_hold(scratch: Path) -> dict[str, float]:
    """In the subprocess: how long the hidden-state callback of one embedding input
    (EMBED_TOKENS x EMBED_DIM floats) holds the runtime, in microseconds."""
    from rkllmd.backends.rkllm.backend import RkllmBackend
    from rkllmd.requests import BackendDefaults, LoadOptions

    from tests.fixtures.build_double import double_library, write_model

    times = scratch / "callback-times.txt"
    os.environ["RKLLM_DOUBLE_CALLBACK_TIMES"] = str(times)
    backend = RkllmBackend(BackendDefaults(library=str(double_library())))
    backend.load(write_model(scratch, embd_size=EMBED_DIM), LoadOptions())
    result = backend.embed(["abcd" * EMBED_TOKENS])
    backend.close()
    assert len(result.vectors[0]) == EMBED_DIM
    holds = [hold for state, _, hold in read_times(times) if state == 0]
    return {"hidden_hold_us": max(holds) / 1000}


def end_lag(scratch: Path) -> dict[str, float]:
    """In the subprocess: END_REPLIES short replies at 25 ms/token; from the return of
    each run's FINISH callback to generate() returning, in microseconds (the reply's
    end, and the earliest the next queued request can start)."""
    from rkllmd.backends.rkllm.backend import RkllmBackend
    from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

    from tests.fixtures.build_double import double_library, write_model

    times = scratch / "callback-times.txt"
    os.environ.update(
        {
            "RKLLM_DOUBLE_TOKEN_DELAY_US": "25000",
            "RKLLM_DOUBLE_PACING": "serial",
            "RKLLM_DOUBLE_CALLBACK_TIMES": str(times),
        }
    )
    backend = RkllmBackend(BackendDefaults(library=str(double_library())))
    backend.load(write_model(scratch), LoadOptions())
    request = GenerateRequest(
        messages=(ChatMessage("user", "[[repeat:12]]"),), sampling=Sampling(max_tokens=12)
    )
    lags = []
    for _ in range(END_REPLIES):
        times.write_text("")
        backend.generate(request, lambda text: None, threading.Event())
        returned_ns = time.monotonic_ns()
        finish = [entry + hold for state, entry, hold in read_times(times) if state == 2]
        lags.append((returned_ns - finish[-1]) / 1000)
    backend.close()
    return {"end_lag_p50_us": statistics.median(lags), "end_lag_max_us": max(lags)}


def read_times(path: Path) -> list[tuple[int, ...]]:
    return [tuple(int(x) for x in line.split()) for line in path.read_text().splitlines()]


def one_run(delay_us: int, scratch: Path) -> dict[str, float]:
    """In the subprocess: one cancelled generation; microseconds cancel -> abort."""
    import orjson
    from rkllmd.backends.rkllm.backend import RkllmBackend
    from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

    from tests.fixtures.build_double import double_library, write_model

    times = scratch / "callback-times.txt"
    os.environ.update(
        {
            "RKLLM_DOUBLE_TOKEN_DELAY_US": str(delay_us),
            "RKLLM_DOUBLE_PACING": "serial",
            "RKLLM_DOUBLE_CALLBACK_TIMES": str(times),
        }
    )
    backend = RkllmBackend(BackendDefaults(library=str(double_library())))
    backend.load(write_model(scratch), LoadOptions(ctx_size=4096))
    read_fd, write_fd = os.pipe()
    pipe = os.fdopen(write_fd, "wb", buffering=0)
    received = 0
    enough = threading.Event()

    def drain() -> None:
        nonlocal received
        while chunk := os.read(read_fd, 65536):
            received += len(chunk)

    sent = 0

    def emit(text: str) -> None:  # what the worker's host does with each piece
        nonlocal sent
        pipe.write(orjson.dumps({"kind": "token", "id": 1, "text": text}) + b"\n")
        sent += len(text)
        if sent >= CANCEL_AFTER_CHARS[delay_us]:
            enough.set()

    cancel = threading.Event()
    request = GenerateRequest(
        messages=(ChatMessage("user", f"[[repeat:{REPLY_TOKENS}]]"),),
        sampling=Sampling(max_tokens=REPLY_TOKENS),
    )
    reader = threading.Thread(target=drain)
    reader.start()
    result: list[str] = []
    run = threading.Thread(
        target=lambda: result.append(backend.generate(request, emit, cancel).finish_reason)
    )
    run.start()
    enough.wait()
    cancelled_ns = time.monotonic_ns()
    cancel.set()
    run.join()
    pipe.close()
    reader.join()
    backend.close()
    lines = read_times(times)
    aborts = [entry for state, entry, _ in lines if state == ABORT]
    tokens_after = sum(1 for state, entry, _ in lines if 0 <= state < 2 and entry > cancelled_ns)
    return {
        "cancel_to_abort_us": (aborts[0] - cancelled_ns) / 1000 if aborts else -1.0,
        "tokens_after_cancel": tokens_after,
        "finish_reason_abort": float(result == ["abort"]),
    }


def in_tree(tree: Path | None, delay_us: int) -> dict[str, float]:
    """One run in a fresh interpreter on ``tree``'s daemon code (None: this checkout)."""
    env = dict(os.environ)
    daemon = (tree or REPO) / "daemon"
    env["PYTHONPATH"] = os.pathsep.join([str(daemon), str(REPO)])
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(delay_us)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return figures


def spread(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tree", action="append", help="NAME=DIR, NAME= for this checkout")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a delay, EMBED or END
    args = parser.parse_args()
    if args.one is not None:
        sys.path.insert(0, str(REPO))
        from tests.helpers import short_tempdir

        scratch = short_tempdir()
        try:
            if args.one == EMBED:
                figures = embed_hold(scratch)
            elif args.one == END:
                figures = end_lag(scratch)
            else:
                figures = one_run(args.one, scratch)
            print(json.dumps(figures))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    trees = [
        (name, Path(path).resolve() if path else None)
        for name, _, path in (t.partition("=") for t in args.tree or ["this="])
    ]
    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.rounds):
        for name, tree in trees:
            samples.setdefault(f"{name}/embed", []).append(in_tree(tree, EMBED))
            samples.setdefault(f"{name}/end", []).append(in_tree(tree, END))
        for delay_us in CANCEL_AFTER_CHARS:
            for name, tree in trees:
                samples.setdefault(f"{name}/{delay_us}us", []).append(in_tree(tree, delay_us))
    result: dict[str, Any] = {"bench": "npu_cancel", "rounds": args.rounds}
    for key, runs in samples.items():
        result[key] = {field: spread([r[field] for r in runs]) for field in runs[0]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
