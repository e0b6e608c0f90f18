"""The seam between the worker and a native runtime: the Backend protocol and
what its calls return. Only the worker imports this package; the request types
the backends consume live in ``rkllmd.requests``, shared with the daemon.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..props import ModelProps
from ..requests import EmbedItem, FinishReason, GenerateRequest, LoadOptions, TokenLogprob, Usage


def pick_option(
    requested: int | None, configured: int | None, builtin: int, zero_means: int | None = 0
) -> int:
    """A numeric load option: the load request's value, else the configured default
    (``[llamacpp]``/``[rkllm]``), else the backend's built-in default.

    ``None`` is "not given" in every layer. 0 is an "automatic" setting whose meaning
    is the option's own: ``zero_means`` is the value it stands for, or ``None`` where the
    runtime has no automatic value, so that 0 counts as not given and the next layer
    decides. Each backend says at its call why 0 means what it does there.
    """
    for value in (requested, configured):
        if value == 0 and zero_means is not None:
            return zero_means
        if value:
            return value
    return builtin


@dataclass(frozen=True, slots=True)
class GenerateResult:
    finish_reason: FinishReason  # of the first choice
    usage: Usage  # summed over the choices
    # Runtime-measured figures when the backend has them (RKLLM: prefill/generate
    # time and tokens, peak memory; llama.cpp: draft tokens proposed and accepted).
    perf: dict[str, Any] | None = None
    # With n > 1: every choice's finish reason, in choice order.
    choices: tuple[FinishReason, ...] = ()


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]  # one L2-normalised vector per input
    prompt_tokens: int


EmitText = Callable[[str], None]


class Emit(Protocol):
    """Where a backend streams text: a piece of choice ``index``, with the
    log-probabilities of the tokens it completes when they were asked for.
    Backends with one choice and no log-probabilities call ``emit(text)``."""

    def __call__(
        self, text: str, index: int = 0, logprobs: list[TokenLogprob] | None = None
    ) -> None: ...


class Backend(Protocol):
    """What the worker needs from a runtime. All calls happen in the worker.

    ``generate`` may be called from several threads at once: up to the ``slots``
    the loaded model's props declare. ``embed`` may run beside them.
    """

    def load(self, path: Path, options: LoadOptions) -> ModelProps:
        """Load the model; return its properties (context size, template, ...)."""
        ...

    def generate(
        self, request: GenerateRequest, emit: Emit, cancel: threading.Event
    ) -> GenerateResult:
        """Stream text pieces through ``emit``; stop early once ``cancel`` is set."""
        ...

    def embed(self, texts: list[EmbedItem]) -> EmbedResult:
        """Pooled, normalised embeddings of each text (or token ids of the vocabulary)."""
        ...

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        """The token ids of the prompt ``request`` becomes, as a generation sees it."""
        ...

    def encode(self, text: str, add_bos: bool, special: bool) -> list[int]:
        """The model's token ids for ``text``; may run beside a generation."""
        ...

    def decode(self, tokens: list[int], special: bool) -> str:
        """The text of token ids; an id outside the vocabulary is ``InvalidParams``."""
        ...

    def close(self) -> None:
        """Free native resources; called exactly once, from the worker."""
        ...
