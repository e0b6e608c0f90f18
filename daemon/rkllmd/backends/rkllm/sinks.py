"""Consumers of one run's callbacks: generated text, or hidden states.

Split UTF-8: a WAITING callback carries the first bytes of a character that
is not complete yet. The runtime then delivers a NORMAL whose text either
repeats those bytes with the rest (the whole character: what Rockchip's demos
rely on) or holds only the rest. A continuation byte can never start a
character, so the two cases are told apart exactly, and each token's own
bytes are kept for the KV tracker.
"""

from __future__ import annotations

import math
import threading
from array import array

from ..base import EmitText
from ..textstream import TextStream


class Coalescer:
    """Hands text to ``emit`` from its own thread, joining what piles up meanwhile.

    The result callback runs inside ``rkllm_run`` and the runtime waits for it, so
    it only appends here; the pipe write happens on this thread. At NPU speeds
    every token goes out on its own; when the reader is slower than the runtime,
    pieces are merged instead of queueing up as separate messages.
    """

    def __init__(self, emit: EmitText) -> None:
        self._emit = emit
        self._pending: list[str] = []
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rkllm-emit", daemon=True)
        self._thread.start()

    def put(self, text: str) -> None:
        with self._ready:
            self._pending.append(text)
            self._ready.notify()

    def close(self) -> None:
        """Send what is left and stop the thread."""
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending and not self._closed:
                    self._ready.wait()
                if not self._pending:
                    return
                text = "".join(self._pending)
                self._pending.clear()
            self._emit(text)


class TextSink:
    def __init__(
        self, emit: EmitText, stop: tuple[str, ...], budget: int, stop_now: threading.Event
    ) -> None:
        self._emit = emit
        self._text = TextStream(stop)
        self._budget = budget
        self._stop_now = stop_now
        self._pending = b""
        self.pieces: list[bytes] = []  # each generated token's own bytes
        self.perf: dict[str, float] | None = None
        self.failed = False
        self.budget_hit = False

    @property
    def stopped(self) -> bool:
        return self._text.stopped

    @property
    def tokens(self) -> int:
        return len(self.pieces)

    def token(self, text: bytes, waiting: bool) -> None:
        if self._stop_now.is_set():
            return
        if waiting:
            self.pieces.append(text)
            self._pending += text
        else:
            if self._pending and text.startswith(self._pending):
                self.pieces.append(text[len(self._pending) :])
                out = text
            else:
                self.pieces.append(text)
                out = self._pending + text
            self._pending = b""
            self._send(self._text.feed(out))
        if self._text.stopped:
            self._stop_now.set()
        elif len(self.pieces) >= self._budget:
            self.budget_hit = True
            self._stop_now.set()

    def _send(self, piece: str) -> None:
        if piece:
            self._emit(piece)

    def hidden(self, values: array[float], dim: int, tokens: int) -> None:
        return None

    def finish(self, perf: dict[str, float]) -> None:
        self.perf = perf

    def error(self) -> None:
        self.failed = True

    def flush(self) -> None:
        """End of the run: emit held text (never a dangling partial character)."""
        self._send(self._text.finish())


class HiddenSink:
    """Mean-pools the last hidden layer over the input tokens, then L2-normalises."""

    def __init__(self) -> None:
        self.vector: list[float] | None = None
        self.tokens = 0
        self.perf: dict[str, float] | None = None
        self.failed = False

    def token(self, text: bytes, waiting: bool) -> None:
        return None

    def hidden(self, values: array[float], dim: int, tokens: int) -> None:
        sums = [0.0] * dim
        for row in range(tokens):
            base = row * dim
            for j, v in enumerate(values[base : base + dim]):
                sums[j] += v
        norm = math.sqrt(sum(s * s for s in sums)) or 1.0
        self.vector = [s / norm for s in sums]
        self.tokens = tokens

    def finish(self, perf: dict[str, float]) -> None:
        self.perf = perf

    def error(self) -> None:
        self.failed = True
