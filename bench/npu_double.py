"""NPU path benchmark with the librkllmrt test double (no NPU needed).

Usage: ``.venv/bin/python bench/npu_double.py [--tokens N]``

Builds tests/fixtures/rkllm_double.c with gcc and starts real daemons on it:

1. ceiling: a zero-delay double, one stream, tokens/s delivered through the
   whole stack: RPC ``chat`` (non-stream and streamed as notifications), and
   HTTP SSE ``POST /v1/chat/completions`` read by the official ``openai``
   client (skipped with a note when the route answers 404);
2. pacing: a 25 ms/token double (RK3588 0.5B speed): delivered tokens/s over
   the double's nominal 40 tokens/s, on RPC streaming and SSE. The double
   emits on a fixed clock (host timer overshoot would otherwise cost ~1% on
   its own), so this checks that nothing in the daemon stalls or batches
   tokens; what one token costs the stack is ``us_per_token`` of the ceiling;
3. KV reuse: a double charging 1 ms per prefilled token and a ~1k-token
   history: TTFT of the next turn served from the KV cache over the TTFT of
   the same request prefilled from scratch.

Prints one JSON line. Targets (issue 4): ceiling >= 5,000 tok/s, pacing >= 0.99,
reuse ratio <= 0.25.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fixtures.build_double import double_library, write_model  # noqa: E402
from tests.helpers import DaemonProcess, RpcClient, short_tempdir  # noqa: E402

MODEL = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
NOMINAL_DELAY_US = 25_000
PACING_TOKENS = 400
PREFILL_US = 1000
HISTORY_TOKENS = 1000
TOKEN_CHARS = len(" tok")  # what the double's [[repeat:N]] emits per token


@contextlib.contextmanager
def daemon(env: dict[str, str]) -> Iterator[DaemonProcess]:
    models = short_tempdir() / "models"
    models.mkdir()
    write_model(models, f"{MODEL}.rkllm", max_context_limit=16384)
    environment = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLMD_RKLLM__CTX_SIZE": "16384",
        "RKLLMD_GENERATION__DEFAULT_MAX_TOKENS": "100000",
        **env,
    }
    process = DaemonProcess(models, env=environment, args=["--load", MODEL, "--log-level", "info"])
    try:
        yield process.wait_ready(60)
    finally:
        process.stop()
        shutil.rmtree(models.parent, ignore_errors=True)


def ask(n: int, prefix: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{prefix}[[repeat:{n}]]"}]


def rpc_rate(d: DaemonProcess, tokens: int, stream: bool) -> dict[str, Any]:
    client = RpcClient(d.socket, timeout=600)
    try:
        client.call("chat", messages=ask(8), max_tokens=8)  # warm-up
        started = time.perf_counter()
        result = client.call("chat", messages=ask(tokens), max_tokens=tokens, stream=stream)
        elapsed = time.perf_counter() - started
    finally:
        client.close()
    got = result["usage"]["completion_tokens"]
    assert got == tokens, result["usage"]
    return {
        "tokens": got,
        "seconds": round(elapsed, 4),
        "tok_s": round(got / elapsed, 1),
        "us_per_token": round(elapsed / got * 1e6, 2),
    }


def rpc_arrivals(d: DaemonProcess, tokens: int) -> list[tuple[float, int]]:
    """(arrival time, tokens in it) of every streamed piece."""
    client = RpcClient(d.socket, timeout=600)
    arrivals: list[tuple[float, int]] = []
    try:
        request_id = client.start("chat", messages=ask(tokens), max_tokens=tokens, stream=True)
        while True:
            message = client.read_message()
            if message.get("id") == request_id:
                break
            arrivals.append((time.perf_counter(), len(message["params"]["text"]) // TOKEN_CHARS))
    finally:
        client.close()
    return arrivals


def sse_arrivals(d: DaemonProcess, tokens: int) -> tuple[list[tuple[float, int]], str | None]:
    """(arrival time, tokens) of content chunks via the openai client, or a note why not."""
    import openai

    client = openai.OpenAI(base_url=d.http_url + "/v1", api_key="unused", timeout=600)
    arrivals: list[tuple[float, int]] = []
    try:
        messages: Any = ask(tokens)
        stream = client.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=tokens, stream=True
        )
        for chunk in stream:
            text = chunk.choices[0].delta.content if chunk.choices else None
            if text:
                arrivals.append((time.perf_counter(), len(text) // TOKEN_CHARS))
    except openai.NotFoundError:
        return [], "POST /v1/chat/completions answered 404 (HTTP API not there yet)"
    except openai.APIConnectionError as exc:
        return [], f"HTTP API unreachable: {exc}"
    return arrivals, None


def sse_rate(d: DaemonProcess, tokens: int) -> dict[str, Any]:
    sse_arrivals(d, 8)  # warm-up
    started = time.perf_counter()
    arrivals, note = sse_arrivals(d, tokens)
    if note:
        return {"skipped": note}
    elapsed = arrivals[-1][0] - started
    return {
        "chunks": len(arrivals),
        "seconds": round(elapsed, 4),
        "tok_s": round(tokens / elapsed, 1),
        "us_per_token": round(elapsed / tokens * 1e6, 2),
    }


def pacing(arrivals: list[tuple[float, int]]) -> dict[str, Any]:
    """Tokens delivered after the first piece over the time since it arrived."""
    if len(arrivals) < 2:
        return {"skipped": "no tokens"}
    tokens = sum(n for _, n in arrivals[1:])
    rate = tokens / (arrivals[-1][0] - arrivals[0][0])
    nominal = 1e6 / NOMINAL_DELAY_US
    return {
        "tok_s": round(rate, 3),
        "nominal_tok_s": nominal,
        "ratio": round(rate / nominal, 4),
        "pieces": len(arrivals),
    }


def ttft(client: RpcClient, messages: list[dict[str, Any]]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    request_id = client.start("chat", messages=messages, max_tokens=4, stream=True)
    first: float | None = None
    while True:
        message = client.read_message()
        if message.get("id") == request_id:
            assert "result" in message, message
            assert first is not None
            return first - started, message["result"]
        first = first or time.perf_counter()


def kv_reuse(d: DaemonProcess) -> dict[str, Any]:
    # The double counts one token per 4 bytes of input.
    history = [{"role": "user", "content": "lorem ipsum " * (HISTORY_TOKENS * 4 // 12)}]
    client = RpcClient(d.socket, timeout=600)
    try:
        reply = client.call("chat", messages=history, max_tokens=16)["message"]["content"]
        turn = [
            *history,
            {"role": "assistant", "content": reply},
            {"role": "user", "content": "And then?"},
        ]
        warm_s, warm = ttft(client, turn)
        client.call("chat", messages=[{"role": "user", "content": "another chat"}], max_tokens=4)
        cold_s, cold = ttft(client, turn)
    finally:
        client.close()
    assert warm["usage"]["cached_tokens"] > 0 and cold["usage"]["cached_tokens"] == 0
    return {
        "history_tokens": cold["usage"]["prompt_tokens"],
        "cached_tokens": warm["usage"]["cached_tokens"],
        "prefill_us_per_token": PREFILL_US,
        "warm_ttft_ms": round(warm_s * 1000, 2),
        "cold_ttft_ms": round(cold_s * 1000, 2),
        "ratio": round(warm_s / cold_s, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=12_000, help="tokens per ceiling run")
    args = parser.parse_args()
    result: dict[str, Any] = {"bench": "npu_double"}
    with daemon({}) as d:
        result["ceiling"] = {
            "rpc_chat": rpc_rate(d, args.tokens, stream=False),
            "rpc_chat_stream": rpc_rate(d, args.tokens, stream=True),
            "http_sse_openai": sse_rate(d, args.tokens),
        }
    with daemon({"RKLLM_DOUBLE_TOKEN_DELAY_US": str(NOMINAL_DELAY_US)}) as d:
        sse, note = sse_arrivals(d, PACING_TOKENS)
        result["pacing_25ms"] = {
            "rpc_chat_stream": pacing(rpc_arrivals(d, PACING_TOKENS)),
            "http_sse_openai": {"skipped": note} if note else pacing(sse),
        }
    with daemon({"RKLLM_DOUBLE_PREFILL_US": str(PREFILL_US)}) as d:
        result["kv_reuse"] = kv_reuse(d)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
