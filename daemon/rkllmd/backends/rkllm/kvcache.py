"""Which text the KV cache holds, and whether a new prompt may continue it.

Every run keeps its history (``keep_history=1``). The tracker remembers the
exact bytes whose tokens are in the cache: everything sent since the last
clear plus the generated tokens the runtime kept. A new prompt continues the
cache only when it starts with exactly those bytes (so edited histories,
other conversations and system-prompt changes all miss) and the rest fits
the context; otherwise the cache is cleared and the whole prompt prefilled.

What the runtime kept of the reply is measured, not assumed: the KV size after
the run minus the size before and the prefilled tokens is the number of
generated tokens kept (the runtime may or may not keep the last one). Any run
that did not end normally (abort, stop string, error) leaves the cache unknown.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# Used to estimate a suffix's tokens before it is sent, until a run measured it.
DEFAULT_TOKENS_PER_BYTE = 0.5
ESTIMATE_MARGIN = 1.25


@dataclass(frozen=True, slots=True)
class Plan:
    send: bytes  # what to give rkllm_run
    clear: bool  # clear the KV cache first
    reused_bytes: int  # bytes of the prompt already in the cache


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class KvTracker:
    def __init__(self, count: Callable[[bytes], int] | None = None) -> None:
        self._text: bytes | None = None  # None: the cache content is unknown
        self._tokens = 0
        self._tokens_per_byte = DEFAULT_TOKENS_PER_BYTE
        self._count = count  # the model's tokenizer, when its tokenizer.json is there

    @property
    def valid(self) -> bool:
        return self._text is not None

    @property
    def cached_tokens(self) -> int:
        return self._tokens if self._text is not None else 0

    def invalidate(self) -> None:
        self._text = None
        self._tokens = 0

    def estimate_tokens(self, data: bytes) -> int:
        """The tokens ``data`` will take: counted by the tokenizer when there is one,
        else estimated from the bytes per token the last runs measured."""
        if self._count is not None:
            return self._count(data)
        return int(len(data) * self._tokens_per_byte * ESTIMATE_MARGIN) + 8

    def plan(self, prompt: bytes, n_ctx: int) -> Plan:
        cached = self._text
        if cached and len(prompt) > len(cached) and prompt.startswith(cached):
            suffix = prompt[len(cached) :]
            if self._tokens + self.estimate_tokens(suffix) < n_ctx:
                return Plan(send=suffix, clear=False, reused_bytes=len(cached))
        return Plan(send=prompt, clear=True, reused_bytes=0)

    def record(
        self,
        plan: Plan,
        prompt: bytes,
        pieces: list[bytes],
        kv_before: int,
        kv_after: int | None,
        prefill_tokens: int,
    ) -> None:
        """A run ended normally: remember what the cache now holds, if it is exact."""
        if kv_after is None or prefill_tokens <= 0:
            self.invalidate()
            return
        if plan.send:
            self._tokens_per_byte = max(0.05, min(1.0, prefill_tokens / len(plan.send)))
        kept = kv_after - kv_before - prefill_tokens
        if not len(pieces) - 1 <= kept <= len(pieces) or kept < 0:
            self.invalidate()
            return
        text = prompt + b"".join(pieces[:kept])
        if not _is_utf8(text):  # cut inside a character: not a text we can compare
            self.invalidate()
            return
        self._text, self._tokens = text, kv_after
