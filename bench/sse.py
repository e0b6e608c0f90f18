"""Streaming clients for bench/engine.py: one OpenAI-style SSE chat stream, timed
on the client, against rkllmd or llama-server alike (same body, same parser)."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import requests


@dataclass(frozen=True)
class Stream:
    ttft: float  # request sent -> first content chunk, seconds
    decode: float  # tokens/s from the first to the last content chunk
    tokens: int
    started: float
    ended: float


def chat_body(messages: list[dict[str, str]], tokens: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        **extra,
    }


def stream_chat(client: requests.Session, url: str, body: dict[str, Any]) -> Stream:
    """POST a streaming chat request; time its content chunks."""
    stamps: list[float] = []
    tokens = 0
    started = time.perf_counter()
    with client.post(url + "/v1/chat/completions", json=body, stream=True, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines(chunk_size=None):
            if not line.startswith(b"data: ") or line == b"data: [DONE]":
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                tokens = int(chunk["usage"]["completion_tokens"])
            choices = chunk.get("choices") or ()
            if choices and (choices[0].get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
    if not stamps:
        raise RuntimeError(f"{url} streamed no content")
    tokens = tokens or body["max_tokens"]
    span = stamps[-1] - stamps[0]
    return Stream(
        ttft=stamps[0] - started,
        decode=(tokens - 1) / span if span > 0 else 0.0,
        tokens=tokens,
        started=started,
        ended=stamps[-1],
    )


def together(url: str, bodies: list[dict[str, Any]]) -> list[Stream]:
    """All bodies at once, one connection each."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        clients = [requests.Session() for _ in bodies]
        try:
            return list(
                pool.map(
                    lambda pair: stream_chat(pair[0], url, pair[1]),
                    zip(clients, bodies, strict=True),
                )
            )
        finally:
            for client in clients:
                client.close()


def aggregate(streams: list[Stream]) -> float:
    """Tokens of all streams over the wall time from the first request to the last token."""
    wall = max(s.ended for s in streams) - min(s.started for s in streams)
    return sum(s.tokens for s in streams) / wall


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def summary(values: list[float], digits: int = 3) -> dict[str, float]:
    """Median with min and max (the machine is shared: spread matters)."""
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }
