"""Accounting of generations: counters for `status`, figures for /metrics.

Kept apart from the manager so that the manager reads as the state machine it
is; the wrapper sees every event of a generation and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from .errors import Aborted, RkllmdError
from .metrics import Metrics
from .requests import DoneEvent, GenerationEvent

Events = AsyncGenerator[GenerationEvent, None]


class GenerationStats:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.counters = dict.fromkeys(
            ("generations", "completed", "aborted", "failed", "completion_tokens"), 0
        )

    async def track(self, events: Events) -> Events:
        """Pass events through; a stream left before its final event counts as aborted."""
        self.counters["generations"] += 1
        outcome = "aborted"
        started = time.monotonic()
        first: float | None = None
        try:
            async for event in events:
                if isinstance(event, DoneEvent):
                    outcome = "aborted" if event.finish_reason == "abort" else "completed"
                    self._record_done(event, first)
                elif first is None:
                    first = time.monotonic()
                    self.metrics.ttft.observe(first - started)
                yield event
        except Aborted:
            raise  # stopped by an unload or shutdown: counted as aborted
        except RkllmdError:
            outcome = "failed"
            raise
        finally:
            await events.aclose()
            self.counters[outcome] += 1
            self.metrics.generations.labels(outcome).inc()

    def _record_done(self, event: DoneEvent, first: float | None) -> None:
        completion = event.usage.completion_tokens
        self.counters["completion_tokens"] += completion
        self.metrics.tokens.labels("completion").inc(completion)
        self.metrics.tokens.labels("prompt").inc(event.usage.prompt_tokens)
        perf = event.perf or {}
        if "draft_tokens" in perf:
            accepted = int(perf["draft_accepted"])
            self.metrics.draft_tokens.labels("accepted").inc(accepted)
            self.metrics.draft_tokens.labels("rejected").inc(int(perf["draft_tokens"]) - accepted)
        if first is not None and completion > 1:
            elapsed = time.monotonic() - first
            if elapsed > 0:
                self.metrics.token_rate.observe((completion - 1) / elapsed)
