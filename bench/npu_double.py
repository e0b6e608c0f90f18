"""NPU path benchmark with the librkllmrt test double (no NPU needed).

Usage: ``.venv/bin/python bench/npu_double.py [--only SECTION]... [--rounds N]
[--tree NAME=DIR]...``; ``--tree before=DIR --tree after=`` runs the daemon
code of another checkout in DIR (``git archive <commit> daemon``) and of this one
side by side, interleaved round by round (ceiling and callback sections).

Builds tests/fixtures/rkllm_double.c with gcc and starts real daemons on it:

1. ceiling: a zero-delay double, one stream, tokens/s delivered through the
   whole stack: RPC ``chat`` (non-stream and streamed as notifications), and
   HTTP SSE ``POST /v1/chat/completions`` read by the official ``openai``
   client, ``--rounds`` times (median with min-max);
2. pacing: a 25 ms/token double (RK3588 0.5B speed): delivered tokens/s over
   the double's nominal 40 tokens/s, on RPC streaming and SSE. The double
   emits on a fixed clock (host timer overshoot would otherwise cost ~1% on
   its own), so this checks that nothing in the daemon stalls or batches
   tokens; what one token costs the stack is ``us_per_token`` of the ceiling;
3. KV reuse: a double charging 1 ms per prefilled token and a ~1k-token
   history: TTFT of the next turn served from the KV cache over the TTFT of
   the same request prefilled from scratch;
4. callback hold (issue 18): a double that computes 25 ms per token *after*
   each callback has returned (``RKLLM_DOUBLE_PACING=serial``, as an NPU
   does), so what the result callback holds is taken from every token. The
   double timestamps each callback's entry and return. Interleaved rounds of:
   ``direct`` (the double through ctypes in this process, an empty callback),
   ``alone`` (one HTTP SSE stream via the openai client), ``queued`` (the
   same with 3 more clients waiting in the queue) and ``slow_reader`` (a raw
   SSE client reading 512 bytes every 100 ms, slower than the tokens come).
   Figures: hold p50/p99/max in microseconds, and tokens/s delivered to the
   client over the direct rate (``delivered_ratio``), medians with min-max.
   Each round also streams a reply with a stop string at token 20 and reports
   the time from that token's callback to ``rkllm_abort`` and how many tokens
   the runtime still produced (``stop``), and the worker's CPU time per token.

Prints one JSON line. Targets: ceiling >= 80,000 tok/s over HTTP SSE (issue 18;
5,000 in issue 4), pacing >= 0.99, reuse ratio <= 0.25, callback hold p99
<= 100 us and delivered_ratio >= 0.995 (issue 18).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import npu_callback as cb  # noqa: E402

from tests.fixtures.build_double import double_library, write_model  # noqa: E402
from tests.helpers import DaemonProcess, RpcClient, short_tempdir  # noqa: E402

MODEL = "Qwen2.5-0.5B-Instruct_W8A8_RK3588"
NOMINAL_DELAY_US = 25_000
PACING_TOKENS = 400
PREFILL_US = 1000
HISTORY_TOKENS = 1000
TOKEN_CHARS = len(" tok")  # what the double's [[repeat:N]] emits per token
STOP_AT = 20  # the token that completes the stop string in the abort-latency run


@contextlib.contextmanager
def daemon(env: dict[str, str], tree: Path | None = None) -> Iterator[DaemonProcess]:
    """A daemon on the double; ``tree``: run the daemon code of another checkout."""
    models = short_tempdir() / "models"
    models.mkdir()
    write_model(models, f"{MODEL}.rkllm", max_context_limit=16384)
    environment = {
        "RKLLMD_RKLLM__LIBRARY": str(double_library()),
        "RKLLMD_RKLLM__CTX_SIZE": "16384",
        "RKLLMD_GENERATION__DEFAULT_MAX_TOKENS": "100000",
        **({"PYTHONPATH": str(tree / "daemon")} if tree else {}),
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


Trees = list[tuple[str, Path | None]]


def ceiling(trees: Trees, tokens: int, rounds: int) -> dict[str, Any]:
    """Zero-delay tokens/s per tree, rounds interleaved across the trees; and how long
    the callbacks of the SSE run held the runtime (the emit thread is never idle)."""
    scratch = short_tempdir()
    times = cb.CallbackTimes(scratch / "callback-times.txt")
    env = {"RKLLM_DOUBLE_CALLBACK_TIMES": str(times.path)}
    runs: dict[str, dict[str, list[Any]]] = {
        name: {"rpc_chat": [], "rpc_chat_stream": [], "http_sse_openai": [], "sse_hold": []}
        for name, _ in trees
    }
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, scratch, True)
        daemons = {name: stack.enter_context(daemon(env, tree)) for name, tree in trees}
        for _ in range(rounds):
            for name, d in daemons.items():
                figures = runs[name]
                figures["rpc_chat"].append(rpc_rate(d, tokens, stream=False)["tok_s"])
                figures["rpc_chat_stream"].append(rpc_rate(d, tokens, stream=True)["tok_s"])
                times.mark()
                figures["http_sse_openai"].append(sse_rate(d, tokens).get("tok_s", 0.0))
                figures["sse_hold"].append(cb.holds_us(times.runs()[-1]))
    return {
        "tokens": tokens,
        "rounds": rounds,
        **{
            name: {
                **{path: cb.spread(figures[path], 0) for path in list(figures)[:3]},
                "sse_hold_us": cb.summarise([{"hold_us": h} for h in figures["sse_hold"]])[
                    "hold_us"
                ],
            }
            for name, figures in runs.items()
        },
    }


def callback_hold(trees: Trees, rounds: int, tokens: int) -> dict[str, Any]:
    """Interleaved rounds of direct, then per tree alone / queued / slow_reader."""
    scratch = short_tempdir()
    times = cb.CallbackTimes(scratch / "callback-times.txt")
    env = cb.double_env(times.path)
    os.environ.update(env)  # the direct runs read them in this process
    prompt = f"[[repeat:{tokens}]]"
    direct = cb.Direct(double_library(), write_model(scratch, f"{MODEL}.rkllm"))
    samples: dict[str, list[dict[str, Any]]] = {"direct": []}
    try:
        with contextlib.ExitStack() as stack:
            daemons = {name: stack.enter_context(daemon(env, tree)) for name, tree in trees}
            for d in daemons.values():
                cb.openai_stream(d.http_url, MODEL, "[[repeat:8]]", 8, TOKEN_CHARS)  # warm-up
            for _ in range(rounds):
                times.mark()
                direct.run(prompt, tokens)
                base = times.runs()[0]
                direct_rate = cb.runtime_rate(base)
                samples["direct"].append({"hold_us": cb.holds_us(base), "tok_s": direct_rate})
                for name, d in daemons.items():
                    for variant, sample in hold_round(d, times, prompt, tokens, direct_rate):
                        samples.setdefault(f"{name}/{variant}", []).append(sample)
    finally:
        direct.close()
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "delay_us": cb.DELAY_US,
        "tokens": tokens,
        **{name: cb.summarise(s) for name, s in samples.items()},
    }


def hold_round(
    d: DaemonProcess, times: cb.CallbackTimes, prompt: str, tokens: int, direct_rate: float
) -> Iterator[tuple[str, dict[str, Any]]]:
    def stream() -> cb.Arrivals:
        return cb.openai_stream(d.http_url, MODEL, prompt, tokens, TOKEN_CHARS)

    def waiting() -> None:
        cb.openai_stream(d.http_url, MODEL, "[[repeat:8]]", 8, TOKEN_CHARS)

    variants: dict[str, Callable[[], Any]] = {
        "alone": stream,
        "queued": lambda: cb.with_waiting_clients(stream, waiting),
        "slow_reader": lambda: cb.slow_sse(d.http_port, MODEL, prompt, tokens),
    }
    times.mark()
    cb.openai_stream(
        d.http_url, MODEL, cb.stop_prompt(STOP_AT, 20), 100, TOKEN_CHARS, stop=["STOP"]
    )
    yield "stop", cb.stop_figures(times.runs()[0], STOP_AT)
    worker = cb.worker_pid(d.proc.pid)
    for variant, work in variants.items():
        times.mark()
        cpu_before = cb.cpu_ns(worker)
        arrivals = work()
        cpu = cb.cpu_ns(worker) - cpu_before
        run = times.runs()[0]
        sample = {
            "hold_us": cb.holds_us(run),
            "runtime_ratio": cb.runtime_rate(run) / direct_rate,
            "worker_cpu_us_per_token": cpu / 1000 / tokens,
        }
        if isinstance(arrivals, list):
            sample["delivered_ratio"] = cb.delivered_rate(arrivals) / direct_rate
        yield variant, sample


SECTIONS = ("ceiling", "pacing", "kv_reuse", "callback")


def parse_tree(text: str) -> tuple[str, Path | None]:
    name, _, path = text.partition("=")
    return name, Path(path).resolve() if path else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=12_000, help="tokens per ceiling run")
    parser.add_argument("--only", action="append", choices=SECTIONS, help="sections to run")
    parser.add_argument("--rounds", type=int, default=5, help="ceiling / callback rounds")
    parser.add_argument("--hold-tokens", type=int, default=200, help="tokens per hold run")
    parser.add_argument(
        "--tree",
        action="append",
        type=parse_tree,
        help="NAME=DIR: also run the daemon code of checkout DIR (ceiling and callback "
        "sections, interleaved); NAME= alone is this checkout",
    )
    args = parser.parse_args()
    only = set(args.only or SECTIONS)
    trees: Trees = args.tree or [("this", None)]
    result: dict[str, Any] = {"bench": "npu_double"}
    if "ceiling" in only:
        result["ceiling"] = ceiling(trees, args.tokens, args.rounds)
    if "pacing" in only:
        with daemon({"RKLLM_DOUBLE_TOKEN_DELAY_US": str(NOMINAL_DELAY_US)}) as d:
            sse, note = sse_arrivals(d, PACING_TOKENS)
            result["pacing_25ms"] = {
                "rpc_chat_stream": pacing(rpc_arrivals(d, PACING_TOKENS)),
                "http_sse_openai": {"skipped": note} if note else pacing(sse),
            }
    if "kv_reuse" in only:
        with daemon({"RKLLM_DOUBLE_PREFILL_US": str(PREFILL_US)}) as d:
            result["kv_reuse"] = kv_reuse(d)
    if "callback" in only:
        result["callback_hold"] = callback_hold(trees, args.rounds, args.hold_tokens)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
