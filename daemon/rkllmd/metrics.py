"""Prometheus metrics, in a registry owned by the daemon (no global state)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STATES = ("idle", "loading", "ready", "generating", "unloading", "failed")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rkllmd_http_requests", "HTTP requests answered", ["route", "status"], registry=r
        )
        self.generations = Counter(
            "rkllmd_generations", "Generations by outcome", ["outcome"], registry=r
        )
        self.tokens = Counter("rkllmd_tokens", "Tokens processed", ["kind"], registry=r)
        self.ttft = Histogram(
            "rkllmd_time_to_first_token_seconds",
            "From the start of a generation (slot held, model resident) to its first token",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.queue_wait = Histogram(
            "rkllmd_queue_wait_seconds",
            "Time a request waited for the model slot",
            buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60, 300),
            registry=r,
        )
        self.token_rate = Histogram(
            "rkllmd_decode_tokens_per_second",
            "Decode speed of each generation",
            buckets=(1, 2, 5, 10, 20, 40, 80, 160, 320, 1000, 5000),
            registry=r,
        )
        self.load_seconds = Histogram(
            "rkllmd_model_load_seconds",
            "Model load duration",
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=r,
        )
        self.queue_depth = Gauge(
            "rkllmd_queue_waiting", "Requests waiting for the slot", registry=r
        )
        self.state = Gauge("rkllmd_model_state", "1 for the current state", ["state"], registry=r)
        self.slots = Gauge(
            "rkllmd_slots",
            "Generations the resident model runs at once, busy and free",
            ["state"],
            registry=r,
        )
        self.draft_tokens = Counter(
            "rkllmd_draft_tokens",
            "Speculative decoding: drafted tokens the model accepted or rejected",
            ["result"],
            registry=r,
        )
        self.embedding_loaded = Gauge(
            "rkllmd_embedding_model_loaded",
            "1 while a separate embedding model is resident",
            registry=r,
        )

    def bind_state(self, state: Callable[[], str], waiting: Callable[[], int]) -> None:
        """Read the manager at scrape time rather than mirroring every change."""
        self.queue_depth.set_function(lambda: float(waiting()))
        for name in STATES:
            self.state.labels(name).set_function(lambda n=name: float(state() == n))  # type: ignore[misc]

    def bind_slots(self, slots: Callable[[], tuple[int, int]]) -> None:
        """``slots()`` gives (total, busy), read at scrape time."""
        self.slots.labels("busy").set_function(lambda: float(slots()[1]))
        self.slots.labels("free").set_function(lambda: float(max(0, slots()[0] - slots()[1])))

    def render(self) -> bytes:
        return generate_latest(self.registry)
