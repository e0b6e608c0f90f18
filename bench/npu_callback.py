"""Callback hold on the NPU path (issue 18); run through ``bench/npu_double.py``.

The real runtime calls the result callback from its decode loop and computes the
next token only once it has returned, so the time the callback holds is taken
from every token. The double models that with ``RKLLM_DOUBLE_PACING=serial`` and
timestamps every callback's entry and return (``RKLLM_DOUBLE_CALLBACK_TIMES``).
"""

from __future__ import annotations

import ctypes
import socket
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

DELAY_US = 25_000
QUEUED_CLIENTS = 3
SLOW_READ_BYTES = 512
SLOW_READ_PAUSE_S = 0.1

ABORT = -1  # the double's line for the first rkllm_abort of a run
Arrivals = list[tuple[float, int]]


def double_env(times: Path) -> dict[str, str]:
    return {
        "RKLLM_DOUBLE_TOKEN_DELAY_US": str(DELAY_US),
        "RKLLM_DOUBLE_PACING": "serial",
        "RKLLM_DOUBLE_CALLBACK_TIMES": str(times),
    }


# --- the double's callback log -------------------------------------------------------


class CallbackTimes:
    """Lines ``state entry_ns hold_ns`` appended by the double at the end of each run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def mark(self) -> None:
        self._offset = self.path.stat().st_size if self.path.exists() else 0

    def runs(self) -> list[list[tuple[int, int, int]]]:
        """Callbacks since the mark, one list per run. A run ends with FINISH or ERROR
        (state 2, 3), or with its abort line (state -1), which may follow FINISH."""
        with self.path.open("rb") as handle:
            handle.seek(self._offset)
            data = handle.read()
        runs: list[list[tuple[int, int, int]]] = [[]]
        for line in data.splitlines():
            state, entry, hold = (int(x) for x in line.split())
            if state == ABORT and not runs[-1] and len(runs) > 1:
                runs[-2].append((state, entry, hold))
                continue
            runs[-1].append((state, entry, hold))
            if state >= 2 or state == ABORT:
                runs.append([])
        return [r for r in runs if r]


def holds_us(run: list[tuple[int, int, int]]) -> dict[str, float]:
    holds = sorted(h / 1000 for state, _, h in run if state != ABORT)
    return {
        "p50": round(holds[len(holds) // 2], 1),
        "p99": round(holds[min(len(holds) - 1, int(len(holds) * 0.99))], 1),
        "max": round(holds[-1], 1),
    }


def runtime_rate(run: list[tuple[int, int, int]]) -> float:
    """Tokens/s as the runtime produced them: token callbacks, first to last entry."""
    entries = [e for state, e, _ in run if 0 <= state < 2]
    return (len(entries) - 1) / ((entries[-1] - entries[0]) / 1e9)


def delivered_rate(arrivals: Arrivals) -> float:
    tokens = sum(n for _, n in arrivals[1:])
    return tokens / (arrivals[-1][0] - arrivals[0][0])


def stop_figures(run: list[tuple[int, int, int]], stop_token: int) -> dict[str, float]:
    """From the runtime handing over the token that completes the stop string (its
    callback's entry) to rkllm_abort, and how many tokens the runtime still produced."""
    tokens = [e for state, e, _ in run if 0 <= state < 2]
    (abort,) = [e for state, e, _ in run if state == ABORT]
    return {
        "stop_to_abort_us": (abort - tokens[stop_token]) / 1000,
        "tokens_after_stop": len(tokens) - stop_token - 1,
    }


def stop_prompt(before: int, after: int) -> str:
    """A reply of ``before`` tokens, then STOP as one token, then ``after`` more."""
    return "[[say:" + " tok" * before + " STOP" + " tok" * after + "]]"


# --- direct: the double through ctypes, an empty callback ------------------------------


class Direct:
    def __init__(self, library: Path, model: Path) -> None:
        from rkllmd.backends.rkllm import abi

        self._abi = abi
        self.lib = ctypes.CDLL(str(library))
        abi.bind(self.lib, abi.ABI_13)
        param = self.lib.rkllm_createDefaultParam()
        param.model_path = str(model).encode()
        param.max_context_len = 4096
        self._callback = abi.ResultCallback(lambda result, userdata, state: 0)
        self._callbacks = abi.Callbacks13(result_callback=self._callback)
        self.handle = ctypes.c_void_p()
        rc = self.lib.rkllm_init(ctypes.byref(self.handle), ctypes.byref(param), self._callbacks)
        assert rc == 0, rc

    def run(self, prompt: str, tokens: int) -> None:
        rk_input = self._abi.Input13()
        rk_input.role = b"user"
        rk_input.input_type = self._abi.INPUT_PROMPT
        rk_input.prompt_input = prompt.encode()
        infer = self._abi.InferParam13()
        infer.max_new_tokens = tokens
        rc = self.lib.rkllm_run(self.handle, ctypes.byref(rk_input), ctypes.byref(infer), None)
        assert rc == 0, rc

    def close(self) -> None:
        self.lib.rkllm_destroy(self.handle)


# --- clients -------------------------------------------------------------------------


def openai_stream(
    url: str, model: str, prompt: str, tokens: int, chars: int, stop: list[str] | None = None
) -> Arrivals:
    import openai

    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", timeout=600)
    arrivals: Arrivals = []
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=tokens,
        stream=True,
        stop=stop,
    )
    for chunk in stream:
        text = chunk.choices[0].delta.content if chunk.choices else None
        if text:
            arrivals.append((time.perf_counter(), len(text) // chars))
    return arrivals


def slow_sse(port: int, model: str, prompt: str, tokens: int) -> int:
    """A raw SSE client that reads SLOW_READ_BYTES every SLOW_READ_PAUSE_S; bytes read."""
    body = orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": tokens,
            "stream": True,
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    conn = socket.socket()
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn.connect(("127.0.0.1", port))
    total = 0
    try:
        conn.sendall(head + body)
        while chunk := conn.recv(SLOW_READ_BYTES):
            total += len(chunk)
            time.sleep(SLOW_READ_PAUSE_S)
    finally:
        conn.close()
    return total


def with_waiting_clients(main: Callable[[], Arrivals], waiting: Callable[[], Any]) -> Arrivals:
    """Run ``main`` while QUEUED_CLIENTS more requests wait behind it in the queue."""
    threads = [threading.Thread(target=waiting) for _ in range(QUEUED_CLIENTS)]
    result: Arrivals = []

    def run_main() -> None:
        result.extend(main())

    first = threading.Thread(target=run_main)
    first.start()
    time.sleep(0.3)  # let the main request take the slot first
    for t in threads:
        t.start()
    first.join()
    for t in threads:
        t.join()
    return result


# --- the worker's CPU time -------------------------------------------------------------


def worker_pid(daemon_pid: int) -> int:
    children = Path(f"/proc/{daemon_pid}/task/{daemon_pid}/children").read_text().split()
    return int(children[0])


def cpu_ns(pid: int) -> int:
    """CPU time of a whole process so far, threads that ended included (Linux encodes
    another process's CPU clock as ``(~pid << 3) | CPUCLOCK_SCHED``)."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)


# --- summary -------------------------------------------------------------------------


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-round figures -> median with min-max for each key."""
    out: dict[str, Any] = {"rounds": len(samples)}
    for key in samples[0]:
        if key == "hold_us":
            out[key] = {q: spread([s[key][q] for s in samples]) for q in ("p50", "p99", "max")}
        else:
            out[key] = spread([s[key] for s in samples], 4)
    return out
