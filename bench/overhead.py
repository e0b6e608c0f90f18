"""Serving overhead: the llama.cpp backend in-process vs. streamed by rkllmd over HTTP.

Same model (SmolLM2), same greedy sampling, same prompt and the same KV-cache
state for every measured run (one warm-up first), so the difference is what the
daemon adds: worker pipe hop, queueing, HTTP, SSE encoding, the openai client.
Also: 8 concurrent clients through the FIFO queue. Prints one JSON line.

    .venv/bin/python bench/overhead.py [--runs 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import openai  # noqa: E402
from rkllmd.backends.llamacpp import LlamaCppBackend, default_threads  # noqa: E402
from rkllmd.requests import (  # noqa: E402
    BackendDefaults,
    ChatMessage,
    GenerateRequest,
    LoadOptions,
    Sampling,
)

from tests.helpers import MODEL_ID, DaemonProcess, place_model, short_tempdir  # noqa: E402

PROMPT = "Write a long story about a lighthouse keeper."


def in_process(runs: int, tokens: int, threads: int) -> list[tuple[float, float]]:
    backend = LlamaCppBackend(BackendDefaults(ctx_size=4096, threads=threads or default_threads()))
    backend.load(REPO / "models" / f"{MODEL_ID}.gguf", LoadOptions())
    request = GenerateRequest(
        messages=(ChatMessage("user", PROMPT),),
        sampling=Sampling(max_tokens=tokens, temperature=0.0),
    )
    results = []
    for _ in range(runs + 1):
        stamps: list[float] = []
        started = time.perf_counter()
        result = backend.generate(request, _stamper(stamps), threading.Event())
        results.append(_figures(started, stamps, result.usage.completion_tokens))
    backend.close()
    return results[1:]


def _stamper(stamps: list[float]) -> Callable[[str], None]:
    return lambda _text: stamps.append(time.perf_counter())


def _figures(started: float, stamps: list[float], completion_tokens: int) -> tuple[float, float]:
    ttft = stamps[0] - started
    decode = (completion_tokens - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return ttft, decode


def over_http(client: openai.OpenAI, tokens: int) -> tuple[float, float]:
    started = time.perf_counter()
    stamps: list[float] = []
    usage = 0
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        elif chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.perf_counter())
    return _figures(started, stamps, usage)


def concurrent(client: openai.OpenAI, clients: int, tokens: int) -> dict[str, float]:
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _i: over_http(client, tokens), range(clients)))
    elapsed = time.perf_counter() - started
    ttfts = sorted(r[0] for r in results)
    return {
        "clients": clients,
        "aggregate_tok_s": round(clients * tokens / elapsed, 1),
        "ttft_p50_ms": round(statistics.median(ttfts) * 1000, 1),
        "ttft_p99_ms": round(ttfts[-1] * 1000, 1),
    }


def summarise(samples: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "ttft_ms": round(statistics.median(s[0] for s in samples) * 1000, 2),
        "decode_tok_s": round(statistics.median(s[1] for s in samples), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="0: the daemon default")
    args = parser.parse_args()

    local = summarise(in_process(args.runs, args.tokens, args.threads))
    models = short_tempdir() / "models"
    models.mkdir()
    place_model(models)
    daemon = DaemonProcess(
        models,
        args=["--load", "smollm2", "--log-level", "warning"],
        env={"RKLLMD_LLAMACPP__THREADS": str(args.threads), "RKLLMD_QUEUE__MAX_WAITING": "16"},
    )
    try:
        daemon.wait_ready()
        with openai.OpenAI(base_url=daemon.http_url + "/v1", api_key="x", max_retries=0) as client:
            over_http(client, args.tokens)  # warm-up: same cache state as the in-process runs
            remote = summarise([over_http(client, args.tokens) for _ in range(args.runs)])
            queued = concurrent(client, 8, args.tokens // 2)
    finally:
        daemon.stop()
    print(
        json.dumps(
            {
                "bench": "overhead",
                "tokens": args.tokens,
                "in_process": local,
                "http_sse": remote,
                "decode_ratio": round(remote["decode_tok_s"] / local["decode_tok_s"], 3),
                "ttft_overhead_ms": round(remote["ttft_ms"] - local["ttft_ms"], 2),
                "concurrent": queued,
            }
        )
    )


if __name__ == "__main__":
    main()
