"""Per-sequence sampling on the llama.cpp engine: grammars (checked after sampling),
several choices from one prompt, log-probabilities and logit bias (real SmolLM2)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from rkllmd.backends.base import GenerateResult
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.errors import InvalidParams
from rkllmd.requests import (
    BackendDefaults,
    ChatMessage,
    GenerateRequest,
    LoadOptions,
    Sampling,
    TokenLogprob,
)

from tests.helpers import model_source

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer"},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 3},
    },
    "required": ["name", "age", "hobbies"],
    "additionalProperties": False,
}
QUESTION = "Describe a person called Ada as a JSON object with her name, age and hobbies."


@dataclass
class Choices:
    """What one generation streamed, per choice."""

    texts: dict[int, list[str]] = field(default_factory=dict)
    logprobs: dict[int, list[TokenLogprob]] = field(default_factory=dict)
    result: GenerateResult | None = None

    def emit(self, text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None) -> None:
        self.texts.setdefault(index, []).append(text)
        self.logprobs.setdefault(index, []).extend(logprobs or [])

    def text(self, index: int = 0) -> str:
        return "".join(self.texts.get(index, []))


def run(
    backend: LlamaCppBackend,
    question: str = QUESTION,
    *,
    n: int = 1,
    logprobs: int | None = None,
    **sampling: Any,
) -> Choices:
    values = {"max_tokens": 60, "temperature": 0.0, **sampling}
    request = GenerateRequest(
        messages=(ChatMessage("user", question),),
        sampling=Sampling(**values),
        n=n,
        logprobs=logprobs,
    )
    out = Choices()
    out.result = backend.generate(request, out.emit, threading.Event())
    return out


def grammar_for(schema: dict[str, Any]) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    return str(json_schema_to_gbnf(json.dumps(schema)))


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=1024, threads=1, parallel=4))
    backend.load(Path(model_source()), LoadOptions())
    yield backend
    backend.close()


def test_a_grammar_makes_the_output_valid_json_of_the_schema(backend: LlamaCppBackend) -> None:
    free = run(backend)
    with pytest.raises(ValueError):
        json.loads(free.text())  # unconstrained, this model does not answer in JSON
    for sampling in ({}, {"temperature": 0.8, "seed": 3}):
        out = run(backend, grammar=grammar_for(PERSON), max_tokens=120, **sampling)
        assert out.result is not None and out.result.finish_reason == "stop"
        jsonschema.validate(json.loads(out.text()), PERSON)


def test_the_grammar_is_applied_only_to_tokens_it_rejects(backend: LlamaCppBackend) -> None:
    stats = backend._engine.stats  # type: ignore[union-attr]
    before = stats.grammar_resamples
    out = run(backend, grammar=grammar_for(PERSON), max_tokens=120)
    assert out.result is not None
    resampled = stats.grammar_resamples - before
    # Sample first, check after: the full-vocabulary mask runs only on a rejection,
    # and the model, asked for JSON, mostly picks tokens the grammar allows.
    assert 0 <= resampled < out.result.usage.completion_tokens // 2


def test_a_grammar_that_does_not_parse_is_refused(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidParams):
        run(backend, grammar="root ::= (")


def test_greedy_choices_share_the_prompt_and_all_give_the_single_answer(
    backend: LlamaCppBackend,
) -> None:
    single = run(backend, "Name three rivers.", max_tokens=24)
    out = run(backend, "Name three rivers.", n=3, max_tokens=24)
    assert out.result is not None
    assert [out.text(i) for i in range(3)] == [single.text()] * 3
    assert out.result.choices == (single.result.finish_reason,) * 3  # type: ignore[union-attr]
    assert out.result.usage.prompt_tokens == single.result.usage.prompt_tokens  # type: ignore[union-attr]
    assert out.result.usage.completion_tokens == 3 * single.result.usage.completion_tokens  # type: ignore[union-attr]


def test_sampled_choice_i_is_the_single_answer_with_seed_plus_i(backend: LlamaCppBackend) -> None:
    question, settings = (
        "Tell me a story about a cat.",
        {"temperature": 1.0, "seed": 41, "max_tokens": 20},
    )
    out = run(backend, question, n=3, **settings)
    alone = [run(backend, question, **{**settings, "seed": 41 + i}).text() for i in range(3)]
    assert [out.text(i) for i in range(3)] == alone
    assert len(set(alone)) > 1  # the choices differ


def test_more_choices_than_sequences_are_refused(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidParams):
        run(backend, n=5)


def test_logprobs_under_greedy_pick_the_most_likely_token(backend: LlamaCppBackend) -> None:
    out = run(backend, "Count from one to five.", logprobs=3, max_tokens=16, ignore_eos=True)
    entries = out.logprobs[0]
    assert out.result is not None and len(entries) == out.result.usage.completion_tokens == 16
    assert "".join(e.token for e in entries) == out.text()
    for entry in entries:
        assert len(entry.top) == 3
        assert [t.logprob for t in entry.top] == sorted(
            (t.logprob for t in entry.top), reverse=True
        )
        assert entry.top[0].token == entry.token
        assert entry.logprob == pytest.approx(entry.top[0].logprob)
        assert entry.logprob <= 0.0
        assert bytes(entry.bytes).decode(errors="replace") == entry.token


def test_a_logit_bias_can_ban_the_greedy_first_token(backend: LlamaCppBackend) -> None:
    import llama_cpp

    plain = run(backend, "Name a colour.", logprobs=0, max_tokens=8)
    first = bytes(plain.logprobs[0][0].bytes)
    vocab = llama_cpp.Llama(str(model_source()), vocab_only=True, verbose=False)
    try:
        ids = [t for t in range(vocab.n_vocab()) if vocab.detokenize([t]) == first]
    finally:
        vocab.close()
    assert ids
    bias = tuple((t, -100.0) for t in ids)
    banned = run(backend, "Name a colour.", logprobs=0, max_tokens=8, logit_bias=bias)
    assert bytes(banned.logprobs[0][0].bytes) != first
