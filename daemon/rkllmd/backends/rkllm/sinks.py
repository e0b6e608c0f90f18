"""Consumers of one run's callbacks: generated text, or hidden states.

Split UTF-8: a WAITING callback carries the first bytes of a character that
is not complete yet. The runtime then delivers a NORMAL whose text either
repeats those bytes with the rest (the whole character: what Rockchip's demos
rely on) or holds only the rest. A continuation byte can never start a
character, so the two cases are told apart exactly, and each token's own
bytes are kept for the KV tracker.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from array import array
from collections.abc import Callable

from ..base import EmitText
from ..textstream import TextStream
from .native import Inbox, RunSink, deliver

logger = logging.getLogger(__name__)


# The callback does not wake the emit thread (see native.py). It sleeps until a token
# is nearly due (DUE_FRACTION of the shorter of the last two gaps between tokens, so
# that one stall does not make it oversleep the next token), then looks every
# EMIT_POLL_S until it is there: a token waits about 1 ms at most (4% of a 25 ms
# token, no cost in throughput), and the thread wakes a few times per token instead
# of every millisecond (which cost ~0.5 ms of CPU per 25 ms token).
EMIT_POLL_S = 0.001
DUE_FRACTION = 0.9
# A token found within this long of a look that found nothing arrived about then.
KNOWN_WITHIN_S = 2 * EMIT_POLL_S


class TokenClock:
    """When the emit thread should look into the inbox next.

    Only arrivals whose time is known (found just after an empty look) plan the next
    sleep: a token found after a long sleep, or after the thread was kept off the CPU,
    may have waited, and planning from that late time would make every later token
    wait as well. After such a one the thread polls until it knows again.
    """

    def __init__(self) -> None:
        self._last: float | None = None  # the last arrival with a known time
        self._gaps = (math.inf, math.inf)
        self._empty_at: float | None = None

    def looked_empty(self, now: float) -> None:
        self._empty_at = now

    def arrived(self, now: float) -> None:
        known = self._empty_at is not None and now - self._empty_at <= KNOWN_WITHIN_S
        if known and self._last is not None:
            self._gaps = (self._gaps[1], now - self._last)
        self._last = now if known else None
        self._empty_at = None

    def sleep_s(self, now: float) -> float:
        gap = min(self._gaps)
        if self._last is None or gap == math.inf:
            return EMIT_POLL_S
        return max(EMIT_POLL_S, self._last + gap * DUE_FRACTION - now)


class Emitter:
    """The consumer of one generation's inbox, on its own thread.

    The result callback only copies into the inbox, so what used to cost the runtime
    a token's worth of Python (UTF-8 joining, stop strings, the budget, encoding and
    the pipe write) happens here, while the NPU computes the next token. Everything
    that piled up since the last look goes out as one message: at NPU speeds that is
    one token per message; when the reader is slower than the runtime, pieces merge
    instead of queueing up as separate messages.
    """

    def __init__(self, inbox: Inbox, sink: TextSink, emit: EmitText) -> None:
        self._inbox = inbox
        self._sink = sink
        self._emit = emit
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rkllm-emit", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """After the run has returned: send what is left and stop the thread."""
        self._inbox.append(None)
        # Wake the thread: it may have planned to sleep most of a token's gap, which
        # would hold back the end of the reply (and the next run) for as long. The
        # runtime is no longer waiting on anything, so waking costs it nothing now.
        self._closed.set()
        self._thread.join()

    def _run(self) -> None:
        try:
            self._pump()
        except Exception:  # a bug in the text work must not leave the run going on unread
            logger.exception("the RKLLM emit thread failed; aborting the run")
            self._sink.fail()

    def _pump(self) -> None:
        inbox, sink, clock = self._inbox, self._sink, TokenClock()
        ended = False
        while not ended:
            now = time.monotonic()
            if not inbox:
                clock.looked_empty(now)
                self._closed.wait(clock.sleep_s(now))
                continue
            clock.arrived(now)
            ended = self._take_all()
            if ended:
                sink.flush()
            if text := sink.take():
                self._send(text)

    def _take_all(self) -> bool:
        """Deliver what is in the inbox now; True once the run's end is among it."""
        inbox = self._inbox
        while inbox:
            item = inbox.popleft()
            if item is None:
                return True
            deliver(item, self._sink)
        return False

    def _send(self, text: str) -> None:
        try:
            self._emit(text)
        except Exception:  # the pipe is gone and the worker going down: drain quietly
            logger.exception("could not send generated text; dropping the rest of it")
            self._emit = _drop


def _drop(text: str) -> None:
    return None


class TextSink:
    """Token bytes -> text for one run, collected until ``take``. Calls ``on_stop`` once
    when a stop string or the token budget ends the run (tokens the runtime delivers
    after that are ignored)."""

    def __init__(self, stop: tuple[str, ...], budget: int, on_stop: Callable[[], object]) -> None:
        self._out: list[str] = []
        self._text = TextStream(stop)
        self._budget = budget
        self._on_stop = on_stop
        self._halted = False
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
        if self._halted:
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
            self._halt()
        elif len(self.pieces) >= self._budget:
            self.budget_hit = True
            self._halt()

    def _halt(self) -> None:
        self._halted = True
        self._on_stop()

    def fail(self) -> None:
        """The text could not be processed: end the run, report it as failed."""
        self.failed = True
        if not self._halted:
            self._halt()

    def _send(self, piece: str) -> None:
        if piece:
            self._out.append(piece)

    def take(self) -> str:
        """The text released since the last call."""
        text = "".join(self._out)
        self._out.clear()
        return text

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
    """Mean-pools the last hidden layer over the input tokens, then L2-normalises.

    Fed after the run has returned (``drain``), never on the runtime's thread."""

    def __init__(self) -> None:
        self.vector: list[float] | None = None
        self.tokens = 0
        self.perf: dict[str, float] | None = None
        self.failed = False

    def token(self, text: bytes, waiting: bool) -> None:
        return None

    def hidden(self, values: array[float], dim: int, tokens: int) -> None:
        # values is row-major (tokens x dim): column j is the strided slice [j::dim].
        sums = [sum(values[j : dim * tokens : dim]) for j in range(dim)]
        norm = math.sqrt(sum(s * s for s in sums)) or 1.0
        self.vector = [s / norm for s in sums]
        self.tokens = tokens

    def finish(self, perf: dict[str, float]) -> None:
        self.perf = perf

    def error(self) -> None:
        self.failed = True


def drain(inbox: Inbox, sink: RunSink) -> None:
    """Deliver every item of a run that has returned."""
    for item in inbox:
        if item is not None:
            deliver(item, sink)
    inbox.clear()
