"""The llama.cpp engine: concurrent sequences in one context, joining, aborting,
prefix reuse and the abort callback, on the real SmolLM2 (1 thread)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rkllmd.backends.base import GenerateResult
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

from tests.helpers import model_source

QUESTIONS = [
    "Write a haiku about the sea.",
    "What is the capital of France? Answer in one sentence.",
    "List three primary colors.",
    "Explain what a compiler does.",
]


def chat(question: str, tokens: int = 40, **sampling: object) -> GenerateRequest:
    return GenerateRequest(
        messages=(ChatMessage("user", question),),
        sampling=Sampling(max_tokens=tokens, temperature=0.0, **sampling),  # type: ignore[arg-type]
    )


@dataclass
class Run:
    pieces: list[str] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)
    result: GenerateResult | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def generate(backend: LlamaCppBackend, request: GenerateRequest, run: Run | None = None) -> Run:
    run = run or Run()
    run.result = backend.generate(request, run.pieces.append, run.cancel)
    return run


def wait_for(condition: Callable[[], bool], what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def open_backend(**options: int) -> LlamaCppBackend:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=1024, threads=1, parallel=4))
    backend.load(Path(model_source()), LoadOptions(**options))  # type: ignore[arg-type]
    return backend


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    backend = open_backend()
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def alone(backend: LlamaCppBackend) -> dict[str, str]:
    """Each question's greedy answer with the engine to itself."""
    return {q: generate(backend, chat(q)).text for q in QUESTIONS}


def test_the_context_holds_four_sequences() -> None:
    backend = LlamaCppBackend(BackendDefaults(ctx_size=512, threads=1, parallel=4))
    try:
        props = backend.load(Path(model_source()), LoadOptions())
        assert (props.slots, props.n_ctx, props.details["n_ctx_total"]) == (4, 512, 2048)
    finally:
        backend.close()


def test_concurrent_greedy_requests_give_the_text_each_gives_alone(
    backend: LlamaCppBackend, alone: dict[str, str]
) -> None:
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda q: generate(backend, chat(q)), QUESTIONS))
    assert [r.text for r in runs] == [alone[q] for q in QUESTIONS]
    assert len(set(alone.values())) == 4  # four different answers, not one repeated
    steps = backend._engine.stats  # type: ignore[union-attr]
    # Batched: fewer decode steps than tokens produced.
    assert steps.decoded_tokens > steps.steps


def test_a_request_joining_mid_run_leaves_the_others_unchanged(
    backend: LlamaCppBackend, alone: dict[str, str]
) -> None:
    first, second = QUESTIONS[3], QUESTIONS[1]
    early = Run()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(generate, backend, chat(first), early)
        wait_for(lambda: len(early.pieces) >= 5, "the first request to stream")
        joined = pool.submit(generate, backend, chat(second))
        assert running.result().text == alone[first]
        assert joined.result().text == alone[second]
    assert not early.text.startswith(alone[second])


def test_aborting_one_sequence_leaves_the_others_running(
    backend: LlamaCppBackend, alone: dict[str, str]
) -> None:
    victim = Run()
    with ThreadPoolExecutor(2) as pool:
        doomed = pool.submit(
            generate, backend, chat(QUESTIONS[0], tokens=200, ignore_eos=True), victim
        )
        survivor = pool.submit(generate, backend, chat(QUESTIONS[2]))
        wait_for(lambda: len(victim.pieces) >= 3, "the victim to stream")
        victim.cancel.set()
        aborted = doomed.result()
        assert survivor.result().text == alone[QUESTIONS[2]]
    assert aborted.result is not None and aborted.result.finish_reason == "abort"
    assert aborted.result.usage.completion_tokens < 200


def test_a_follow_up_turn_reuses_its_own_sequence(backend: LlamaCppBackend) -> None:
    # Another request in between lands on another slot and must not evict the history.
    history = (ChatMessage("user", "Name a fruit."),)
    first = generate(
        backend,
        GenerateRequest(messages=history, sampling=Sampling(max_tokens=12, temperature=0.0)),
    )
    generate(backend, chat(QUESTIONS[1], tokens=4))
    follow = (*history, ChatMessage("assistant", first.text), ChatMessage("user", "Another one?"))
    second = generate(
        backend, GenerateRequest(messages=follow, sampling=Sampling(max_tokens=8, temperature=0.0))
    )
    assert second.result is not None and first.result is not None
    usage = second.result.usage
    # Everything up to the first turn's answer is reused.
    assert usage.cached_tokens >= first.result.usage.prompt_tokens
    assert usage.cached_tokens < usage.prompt_tokens


def test_the_abort_callback_stops_a_long_prefill_inside_the_decode() -> None:
    # One decode of ~1,500 prompt tokens: only the abort callback can stop it midway.
    backend = open_backend(batch_size=2048, ctx_size=2048)
    try:
        ctx, engine = backend._ctx, backend._engine
        assert ctx is not None and engine is not None
        long_prompt = "The quick brown fox jumps over the lazy dog. " * 150
        run = Run()
        request = GenerateRequest(
            prompt=long_prompt, sampling=Sampling(max_tokens=4, temperature=0.0)
        )
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(generate, backend, request, run)
            wait_for(lambda: ctx.abort.checks > 0 or pending.done(), "the prefill decode to start")
            run.cancel.set()
            pending.result()
        assert run.result is not None and run.result.finish_reason == "abort"
        assert run.pieces == []
        assert engine.stats.aborted_decodes == 1
        # Nothing of the interrupted batch stayed in the cache ...
        assert all(ctx.seq_pos_max(seq) == -1 for seq in range(ctx.n_seq))
        # ... and the engine serves the next request normally.
        again = generate(backend, chat(QUESTIONS[2], tokens=8))
        assert again.result is not None and again.result.finish_reason in ("stop", "length")
        assert again.text
    finally:
        backend.close()
