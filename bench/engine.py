"""The llama.cpp serving engine against llama-server, side by side in one run.

Starts rkllmd (this tree) and llama-server (built from the llama.cpp that the
llama-cpp-python wheel vendors: scripts/build-llama-server.sh) on the same GGUF
with the same thread count, 4 sequences of the same context each, and
interleaves the series rep by rep (A, B, A, B, ...): medians with min-max.
Prints one JSON line. See docs/benchmarks.md for how to read it.

    .venv/bin/python bench/engine.py [--reps 5] [--threads 1]

Series (HTTP SSE, greedy, client-side timing):
  single     one stream, 200 tokens, ignore_eos, cache_prompt off
  parallel4  4 concurrent streams with different prompts: aggregate tok/s
  ttft8      8 clients at once against this tree and against the serial daemon
             of --serial-ref (one generation at a time): TTFT p99
  turn2      second-turn TTFT / cold TTFT with a ~1k-token history
In process (the backend the worker hosts): grammar-constrained vs free decode,
and speculative decoding (prompt lookup, SmolLM2 drafting for itself).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import inprocess  # noqa: E402
from sse import aggregate, chat_body, p99, stream_chat, summary, together  # noqa: E402

from tests.helpers import DaemonProcess, free_port, model_source, place_model, short_tempdir  # noqa: E402

# The last commit before the engine: one generation at a time.
SERIAL_REF = "185ae61"
SEQ_CTX = 2048
TOPICS = ["a lighthouse keeper", "a mountain village", "a clockmaker", "a desert caravan"]
WORDS = [
    "river",
    "stone",
    "market",
    "lantern",
    "harbour",
    "orchard",
    "signal",
    "winter",
    "copper",
    "meadow",
]


def story(topic: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {topic}."}]


# --- servers -----------------------------------------------------------------------


def llama_server_binary() -> Path:
    given = os.environ.get("RKLLMD_LLAMA_SERVER")
    if given:
        return Path(given)
    built = subprocess.run(
        [str(REPO / "scripts" / "build-llama-server.sh")],
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(built.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def llama_server(binary: Path, threads: int) -> Iterator[str]:
    port = free_port()
    argv = [
        str(binary), "-m", str(model_source()), "-np", "4", "-c", str(4 * SEQ_CTX),
        "-b", "512", "-ub", "512", "-t", str(threads), "-tb", str(threads),
        "--host", "127.0.0.1", "--port", str(port), "--no-webui",
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_http(url + "/health", proc)
            yield url
        finally:
            proc.terminate()
            proc.wait(30)


def wait_http(url: str, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


@contextlib.contextmanager
def rkllmd(threads: int, pythonpath: Path | None = None) -> Iterator[str]:
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    env = {
        "RKLLMD_LLAMACPP__THREADS": str(threads),
        "RKLLMD_LLAMACPP__CTX_SIZE": str(SEQ_CTX),
        "RKLLMD_QUEUE__MAX_WAITING": "16",
    }
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    daemon = DaemonProcess(models, args=["--load", "smollm2", "--log-level", "warning"], env=env)
    try:
        daemon.wait_ready(300)
        yield daemon.http_url
    finally:
        daemon.stop()
        shutil.rmtree(models.parent, ignore_errors=True)


@contextlib.contextmanager
def serial_tree(ref: str) -> Iterator[Path]:
    """The daemon package as of ``ref`` (imported through PYTHONPATH)."""
    root = Path(tempfile.mkdtemp(prefix="rkllmd-serial-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", ref, "daemon"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
        yield root / "daemon"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- series ------------------------------------------------------------------------


def single(url: str, tokens: int) -> dict[str, float]:
    body = chat_body(story(TOPICS[0]), tokens, ignore_eos=True, cache_prompt=False)
    with requests.Session() as client:
        result = stream_chat(client, url, body)
    return {"decode": result.decode, "ttft": result.ttft}


def parallel4(url: str, tokens: int) -> dict[str, float]:
    bodies = [chat_body(story(t), tokens, ignore_eos=True, cache_prompt=False) for t in TOPICS]
    streams = together(url, bodies)
    return {
        "aggregate": aggregate(streams),
        "per_stream": sum(s.decode for s in streams) / len(streams),
    }


def ttft8(url: str, tokens: int, rep: int) -> dict[str, float]:
    # Distinct prompts per rep and client: no prefix is already cached.
    bodies = [
        chat_body(story(f"{TOPICS[i % 4]} (variant {rep}-{i})"), tokens, ignore_eos=True)
        for i in range(8)
    ]
    streams = together(url, bodies)
    return {"ttft_p99": p99([s.ttft for s in streams]), "aggregate": aggregate(streams)}


def history(rep: int, words: int = 700) -> str:
    pick = random.Random(rep)
    return " ".join(pick.choice(WORDS) for _ in range(words))


def turn2(url: str, rep: int) -> dict[str, float]:
    first = [{"role": "user", "content": f"Summarise these notes: {history(rep)}"}]
    with requests.Session() as client:
        cold = stream_chat(client, url, chat_body(first, 24))
        answer = "The notes list places and objects."
        follow = [
            *first,
            {"role": "assistant", "content": answer},
            {"role": "user", "content": "Shorter."},
        ]
        warm = stream_chat(client, url, chat_body(follow, 24))
    return {"cold": cold.ttft, "second": warm.ttft}


def interleave(
    reps: int, series: dict[str, Callable[[int], dict[str, float]]]
) -> dict[str, list[dict[str, float]]]:
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in series}
    for rep in range(reps):
        for name, run in series.items():
            runs[name].append(run(rep))
    return runs


def column(runs: list[dict[str, float]], key: str) -> list[float]:
    return [r[key] for r in runs]


def ratios(a: list[dict[str, float]], b: list[dict[str, float]], key: str) -> list[float]:
    """Per rep: a/b (each pair ran back to back)."""
    return [x[key] / y[key] for x, y in zip(a, b, strict=True)]


# --- main --------------------------------------------------------------------------


def http_series(args: argparse.Namespace, server: Path) -> dict[str, Any]:
    with rkllmd(args.threads) as ours, llama_server(server, args.threads) as theirs:
        single(ours, 16), single(theirs, 16)  # warm-up
        runs = interleave(
            args.reps,
            {
                "ours_single": lambda r: single(ours, args.tokens),
                "server_single": lambda r: single(theirs, args.tokens),
                "ours_par4": lambda r: parallel4(ours, args.tokens),
                "server_par4": lambda r: parallel4(theirs, args.tokens),
            },
        )
        turns = [turn2(ours, rep) for rep in range(args.reps)]
        ours_ttft = [ttft8(ours, args.ttft_tokens, rep) for rep in range(args.reps)]
    with serial_tree(args.serial_ref) as tree, rkllmd(args.threads, tree) as serial:
        serial_ttft = [ttft8(serial, args.ttft_tokens, rep) for rep in range(args.reps)]
    return {
        "single_decode_tok_s": {
            "rkllmd": summary(column(runs["ours_single"], "decode"), 1),
            "llama_server": summary(column(runs["server_single"], "decode"), 1),
            "ratio": summary(ratios(runs["ours_single"], runs["server_single"], "decode")),
        },
        "parallel4_aggregate_tok_s": {
            "rkllmd": summary(column(runs["ours_par4"], "aggregate"), 1),
            "llama_server": summary(column(runs["server_par4"], "aggregate"), 1),
            "ratio": summary(ratios(runs["ours_par4"], runs["server_par4"], "aggregate")),
            "rkllmd_per_stream": summary(column(runs["ours_par4"], "per_stream"), 1),
        },
        "ttft_p99_8_clients_s": {
            "rkllmd": summary(column(ours_ttft, "ttft_p99")),
            "serial": summary(column(serial_ttft, "ttft_p99")),
            "ratio": summary(ratios(ours_ttft, serial_ttft, "ttft_p99")),
            "aggregate_tok_s": {
                "rkllmd": summary(column(ours_ttft, "aggregate"), 1),
                "serial": summary(column(serial_ttft, "aggregate"), 1),
            },
        },
        "second_turn_ttft": {
            "cold_ms": summary([t["cold"] * 1000 for t in turns], 1),
            "second_ms": summary([t["second"] * 1000 for t in turns], 1),
            "ratio": summary([t["second"] / t["cold"] for t in turns]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--ttft-tokens", type=int, default=64)
    parser.add_argument("--serial-ref", default=SERIAL_REF)
    parser.add_argument("--only", choices=["http", "inprocess"], default=None)
    args = parser.parse_args()
    figures: dict[str, Any] = {"bench": "engine", "threads": args.threads, "reps": args.reps}
    if args.only != "inprocess":
        figures.update(http_series(args, llama_server_binary()))
    if args.only != "http":
        figures.update(inprocess.series(args.reps, args.threads))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
