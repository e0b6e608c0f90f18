"""llama.cpp embeddings: over-context inputs refused, token counts as llama.cpp counts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.errors import ContextLengthExceeded
from rkllmd.requests import BackendDefaults, LoadOptions

from tests.helpers import model_source

TEXTS = ["hello world", "The quick brown fox " * 20, "é ü 日本語 <|im_start|>"] + [
    f"item {i}" for i in range(40)
]


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=512, threads=1))
    backend.load(Path(model_source()), LoadOptions())
    yield backend
    backend.close()


def test_an_input_over_the_context_is_refused(backend: LlamaCppBackend) -> None:
    with pytest.raises(ContextLengthExceeded) as err:
        backend.embed(["ok", "word " * 600, "word " * 700])
    assert err.value.message == "an input is 701 tokens but the context holds 512"
    assert err.value.details == {"n_ctx": 512}


def test_counts_are_the_tokens_embedded(backend: LlamaCppBackend) -> None:
    result = backend.embed(TEXTS)
    assert len(result.vectors) == len(TEXTS)
    expected, count = backend._embedder.embed(TEXTS, normalize=True, return_count=True)
    assert result.prompt_tokens == count
    assert result.vectors == [list(map(float, v)) for v in expected]
