"""The engine's hook for prompt cells that are not token ids (images through
libmtmd): a chunk evaluated by its own decode, and prefix reuse that never takes
such cells for text. A stand-in chunk decodes real tokens outside the step's
batch, so the answer must equal the all-text answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.backends.llamacpp.native import DECODE_OK, Batch, Context
from rkllmd.backends.llamacpp.sampling import SamplerSpec
from rkllmd.backends.llamacpp.sequence import OPAQUE, Job, MediaChunk
from rkllmd.errors import GenerationFailed
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions

from tests.helpers import model_source


class TokensAsMedia:
    """Evaluates some prompt tokens by its own decode, as libmtmd does an image."""

    def __init__(self, lib: object, tokens: list[int], fail: bool = False) -> None:
        self._lib = lib
        self._tokens = tokens
        self._fail = fail
        self.calls = 0

    @property
    def n_tokens(self) -> int:
        return len(self._tokens)

    def evaluate(self, ctx: Context, seq_id: int, position: int) -> bool:
        self.calls += 1
        if self._fail:
            return False
        batch = Batch(self._lib, len(self._tokens))
        batch.add(self._tokens, position, seq_id, 0)
        return ctx.decode(batch) == DECODE_OK


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    pytest.importorskip("llama_cpp")
    backend = LlamaCppBackend(BackendDefaults(ctx_size=1024, threads=1, parallel=2))
    backend.load(Path(model_source()), LoadOptions())
    yield backend
    backend.close()


def prompt_of(backend: LlamaCppBackend) -> list[int]:
    request = GenerateRequest(
        messages=(ChatMessage("user", "Describe the picture: a red boat on a calm lake."),)
    )
    return backend._prompts.tokens(request)  # type: ignore[union-attr]


def run(
    backend: LlamaCppBackend, prompt: list[int], media: dict[int, MediaChunk]
) -> tuple[str, Job]:
    pieces: list[str] = []
    job = Job(
        prompt=prompt,
        specs=[SamplerSpec(temperature=0.0)],
        budget=24,
        emit=lambda text, index=0, logprobs=None: pieces.append(text),
        cancel=threading.Event(),
        media=media,
    )
    backend._engine.run(job)  # type: ignore[union-attr]
    return "".join(pieces), job


def test_media_cells_give_the_text_answer_and_are_never_reused_as_text(
    backend: LlamaCppBackend,
) -> None:
    tokens = prompt_of(backend)
    start, end = 8, 20  # the "image": cells in the user's message
    lib = backend._lib
    plain, _ = run(backend, tokens, {})
    with_media = tokens[:start] + [OPAQUE] * (end - start) + tokens[end:]
    chunk = TokensAsMedia(lib, tokens[start:end])
    text, job = run(backend, with_media, {start: chunk})
    assert text == plain
    assert chunk.calls == 1
    # The same image prompt again: the text before the image is reused, the image
    # is evaluated again (its cells are not matched by id).
    again = TokensAsMedia(lib, tokens[start:end])
    text, job = run(backend, with_media, {start: again})
    assert (text, again.calls, job.usage.cached_tokens) == (plain, 1, start)
    # A text prompt whose ids at those positions happen to be what the image
    # replaced must not take the image cells for its own tokens.
    text, job = run(backend, tokens, {})
    assert text == plain
    assert job.usage.cached_tokens == start


def test_a_media_chunk_that_fails_fails_its_request_only(backend: LlamaCppBackend) -> None:
    tokens = prompt_of(backend)
    broken = tokens[:8] + [OPAQUE] * 4 + tokens[12:]
    with pytest.raises(GenerationFailed):
        run(backend, broken, {8: TokensAsMedia(backend._lib, tokens[8:12], fail=True)})
    text, job = run(backend, tokens, {})
    assert text and job.finish[0] in ("stop", "length")


def test_a_prompt_ending_in_media_is_refused(backend: LlamaCppBackend) -> None:
    tokens = prompt_of(backend)
    with pytest.raises(GenerationFailed):
        run(backend, [*tokens, OPAQUE], {len(tokens): TokensAsMedia(backend._lib, [tokens[0]])})
