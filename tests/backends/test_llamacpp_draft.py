"""Speculative decoding on the llama.cpp engine: a draft model and prompt lookup
change the speed, never the greedy text (real SmolLM2, 1 thread)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling

from tests.backends.test_llamacpp_engine import generate
from tests.helpers import model_source

REPEAT = (
    "Repeat this text exactly, twice: The quick brown fox jumps over the lazy dog. "
    "A stitch in time saves nine. All that glitters is not gold."
)
OTHER = "Explain what a compiler does."


def ask(question: str, tokens: int = 48, **sampling: object) -> GenerateRequest:
    return GenerateRequest(
        messages=(ChatMessage("user", question),),
        sampling=Sampling(**{"max_tokens": tokens, "temperature": 0.0, **sampling}),  # type: ignore[arg-type]
    )


def open_backend(**options: object) -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=1024, threads=1, parallel=2))
    props = backend.load(Path(model_source()), LoadOptions(**options))  # type: ignore[arg-type]
    kind = "draft_model" if "draft_model" in options else "lookup" if options else None
    assert props.details.get("speculative") == kind
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def plain() -> Iterator[LlamaCppBackend]:
    yield from open_backend()


@pytest.fixture(scope="module")
def self_drafted() -> Iterator[LlamaCppBackend]:
    yield from open_backend(draft_model=str(model_source()), draft_tokens=6)


@pytest.fixture(scope="module")
def looked_up() -> Iterator[LlamaCppBackend]:
    yield from open_backend(lookup_ngram=3)


def test_a_model_drafting_for_itself_is_always_right_and_changes_nothing(
    plain: LlamaCppBackend, self_drafted: LlamaCppBackend
) -> None:
    for question in (REPEAT, OTHER):
        reference = generate(plain, ask(question))
        drafted = generate(self_drafted, ask(question))
        assert drafted.text == reference.text
        assert drafted.result is not None and drafted.result.perf is not None
        perf = drafted.result.perf
        assert perf["draft_tokens"] > 0
        assert perf["draft_accepted"] == perf["draft_tokens"]
        assert drafted.result.usage == reference.result.usage  # type: ignore[union-attr]


def test_drafted_sequences_batched_together_keep_their_own_text(
    plain: LlamaCppBackend, self_drafted: LlamaCppBackend
) -> None:
    alone = [generate(plain, ask(q)).text for q in (REPEAT, OTHER)]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda q: generate(self_drafted, ask(q)).text, (REPEAT, OTHER)))
    assert together == alone


def test_prompt_lookup_drafts_from_the_text_and_changes_nothing(
    plain: LlamaCppBackend, looked_up: LlamaCppBackend
) -> None:
    reference = generate(plain, ask(REPEAT, tokens=60, ignore_eos=True))
    drafted = generate(looked_up, ask(REPEAT, tokens=60, ignore_eos=True))
    assert drafted.text == reference.text
    assert drafted.result is not None and drafted.result.perf is not None
    perf = drafted.result.perf
    # The answer quotes the prompt, so lookups find candidates and most hold.
    assert perf["draft_tokens"] > 0
    assert 0 < perf["draft_accepted"] <= perf["draft_tokens"]


def test_sampled_output_with_a_draft_still_follows_the_request(
    self_drafted: LlamaCppBackend,
) -> None:
    run = generate(self_drafted, ask(OTHER, tokens=30, ignore_eos=True, temperature=0.9, seed=7))
    again = generate(self_drafted, ask(OTHER, tokens=30, ignore_eos=True, temperature=0.9, seed=7))
    assert run.result is not None and run.result.usage.completion_tokens == 30
    assert run.text == again.text  # the seed still decides
