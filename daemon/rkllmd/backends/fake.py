"""A deterministic stand-in for a runtime, for the fast test tier only.

The worker hosts it instead of the real backend when the test-only environment
variable ``_RKLLMD_TEST_BACKEND=fake`` is set (never in production: the name is not
an RKLLMD_* setting and nothing documents it for users). Everything above the
backend is real: the worker process, its pipe, the manager, both transports.

It behaves like a small chat model where the transports can see it:
- the reply is a stream of words picked from a fixed vocabulary by a seeded
  generator: the same prompt and seed (or temperature 0) give the same text;
- a reply ends by itself after a length derived from the prompt (the model's
  end-of-sequence), unless ``ignore_eos``; ``max_tokens`` and stop strings apply;
- prompts are counted in whitespace-separated tokens and must fit the context;
- each token takes ``_RKLLMD_TEST_FAKE_TOKEN_SECONDS`` (default 2 ms), so streams,
  aborts and queues behave as they do with a real model;
- embeddings are unit vectors derived from the text's hash;
- it sees images when a projector (``*mmproj*.gguf``) sits next to the model file:
  each image is ``IMAGE_TOKENS`` prompt tokens derived from its bytes, so different
  images give different replies and the same image the same one.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import threading
import time
from pathlib import Path

from ..errors import ContextLengthExceeded, InvalidParams, LoadFailed, UnsupportedByModel
from ..props import ModelProps
from ..requests import (
    BackendDefaults,
    ChatMessage,
    EmbedItem,
    GenerateRequest,
    LoadOptions,
    Sampling,
    Usage,
)
from .base import EmbedResult, EmitText, GenerateResult, pick_option
from .companion import find_companion
from .textstream import TextStream

TOKEN_SECONDS_ENV = "_RKLLMD_TEST_FAKE_TOKEN_SECONDS"  # noqa: S105 - a name, not a secret
DEFAULT_CTX = 4096
TRAIN_CTX = 32768
EMBEDDING_SIZE = 256
IMAGE_TOKENS = 16
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SENTENCE = (
    "Hello there. The quick brown fox jumps over the lazy dog, and the small model answers "
    "every question with a sentence or two about rivers, numbers, weather, colours and the "
    "stars at night."
)
WORDS = tuple(SENTENCE.split(" "))


class FakeBackend:
    def __init__(self, defaults: BackendDefaults) -> None:
        self._defaults = defaults
        self._n_ctx = DEFAULT_CTX
        self._delay = float(os.environ.get(TOKEN_SECONDS_ENV, "0.002"))
        self._vocab: dict[str, int] = {}

    def load(self, path: Path, options: LoadOptions) -> ModelProps:
        _check_file(path)
        # As in llama.cpp, a context of 0 is the model's training context.
        ctx = pick_option(options.ctx_size, self._defaults.ctx_size, DEFAULT_CTX, TRAIN_CTX)
        self._n_ctx = ctx
        template = options.chat_template or self._defaults.chat_template
        return ModelProps(
            backend="fake",
            backend_version="1",
            n_ctx=self._n_ctx,
            n_ctx_train=TRAIN_CTX,
            threads=1,
            chat_template=template or TEMPLATE,
            chat_template_source="override" if template else "model",
            vision=find_companion(path, ".gguf", "mmproj") is not None,
            details={"name": path.stem},
        )

    def generate(
        self, request: GenerateRequest, emit: EmitText, cancel: threading.Event
    ) -> GenerateResult:
        prompt = self._render(request)
        prompt_tokens = len(prompt.split())
        if prompt_tokens >= self._n_ctx:
            raise ContextLengthExceeded(
                f"the prompt is {prompt_tokens} tokens but the context holds {self._n_ctx}",
                prompt_tokens=prompt_tokens,
                n_ctx=self._n_ctx,
            )
        s = request.sampling
        usage = Usage(prompt_tokens=prompt_tokens)
        rng = random.Random(self._seed(prompt, s))  # noqa: S311 - not crypto
        natural_end = 8 + rng.randrange(24)
        budget = min(s.max_tokens, self._n_ctx - prompt_tokens)
        text = TextStream(s.stop)
        while usage.completion_tokens < budget:
            if cancel.is_set():
                return GenerateResult("abort", usage)
            if not s.ignore_eos and usage.completion_tokens >= natural_end:
                break
            time.sleep(self._delay)
            word = WORDS[rng.randrange(len(WORDS))]
            usage.completion_tokens += 1
            piece = text.feed((word if usage.completion_tokens == 1 else " " + word).encode())
            if piece:
                emit(piece)
            if text.stopped:
                return GenerateResult("stop", usage)
        rest = text.finish()
        if rest:
            emit(rest)
        return GenerateResult("length" if usage.completion_tokens >= budget else "stop", usage)

    def embed(self, texts: list[EmbedItem]) -> EmbedResult:
        words = [_words(item) for item in texts]
        vectors = [_unit_vector(" ".join(w)) for w in words]
        return EmbedResult(vectors=vectors, prompt_tokens=sum(len(w) for w in words))

    def encode_prompt(self, request: GenerateRequest) -> list[int]:
        return self.encode(self._render(request), add_bos=False, special=True)

    def encode(self, text: str, add_bos: bool, special: bool) -> list[int]:
        """One id per whitespace-separated word (as prompts are counted here), from
        a vocabulary that grows as words are seen; BOS is id 1."""
        ids = [self._vocab.setdefault(word, len(self._vocab) + 2) for word in text.split()]
        return [1, *ids] if add_bos else ids

    def decode(self, tokens: list[int], special: bool) -> str:
        words = {i: w for w, i in self._vocab.items()}
        words[1] = "<s>" if special else ""
        if bad := [t for t in tokens if t not in words]:
            raise InvalidParams(f"unknown token id {bad[0]}", param="tokens")
        return " ".join(w for w in (words[t] for t in tokens) if w)

    def close(self) -> None:
        return None

    @staticmethod
    def _render(request: GenerateRequest) -> str:
        if request.suffix is not None:
            raise UnsupportedByModel("suffix needs a model with fill-in-the-middle tokens")
        if request.prompt_tokens is not None:
            return " ".join(_words(request.prompt_tokens))
        if request.prompt is not None:
            return request.prompt
        turns = [f"<|im_start|>{m.role}\n{_content(m)}<|im_end|>" for m in request.messages]
        return "\n".join([*turns, "<|im_start|>assistant"])

    @staticmethod
    def _seed(prompt: str, s: Sampling) -> int:
        """Greedy or seeded runs repeat; every sampling setting changes the text."""
        if s.temperature > 0 and s.seed is None:
            return random.getrandbits(32)
        knobs = [s.seed, s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty]
        knobs += [s.presence_penalty, s.frequency_penalty]
        digest = hashlib.sha256(f"{prompt}\0{knobs}".encode()).digest()
        return int.from_bytes(digest[:8], "little")


def _content(message: ChatMessage) -> str:
    """The message's text after its images, each IMAGE_TOKENS words from its bytes."""
    seen: list[str] = []
    for image in message.images:
        digest = hashlib.sha256(image.data).hexdigest()
        seen.extend(f"<img{i}:{digest[:12]}>" for i in range(IMAGE_TOKENS))
    return " ".join([*seen, message.content])


def _check_file(path: Path) -> None:
    """What a runtime would notice first: a missing file, or a GGUF with a bad header."""
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError:
        raise LoadFailed("the model file cannot be read") from None
    if path.suffix.lower() == ".gguf" and (
        head[:4] != b"GGUF" or int.from_bytes(head[4:8], "little") not in (2, 3)
    ):
        raise LoadFailed("the file is not a GGUF model (bad header)")


def _words(item: EmbedItem) -> list[str]:
    """The fake's tokens: whitespace-separated words; token id i stands for WORDS[i]."""
    if isinstance(item, str):
        return item.split()
    for token in item:
        if not 0 <= token < len(WORDS):
            raise UnsupportedByModel(
                f"token id {token} is outside the vocabulary (0..{len(WORDS) - 1})"
            )
    return [WORDS[token] for token in item]


def _unit_vector(text: str) -> list[float]:
    raw: list[float] = []
    for block in range(EMBEDDING_SIZE // 32):
        digest = hashlib.sha256(f"{block}\0{text}".encode()).digest()
        raw.extend(b - 127.5 for b in digest)
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]
