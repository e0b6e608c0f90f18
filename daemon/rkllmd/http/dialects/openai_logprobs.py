"""OpenAI's two shapes of log-probabilities, from the engine's per-token values.

Chat completions: ``{"content": [{"token", "logprob", "bytes", "top_logprobs"}]}``.
Legacy completions: parallel lists ``tokens``, ``token_logprobs``, ``top_logprobs``
(one ``{token: logprob}`` object per token) and ``text_offset``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...requests import TokenLogprob


def _one(entry: TokenLogprob) -> dict[str, Any]:
    return {"token": entry.token, "logprob": entry.logprob, "bytes": list(entry.bytes)}


def chat_content(entries: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [{**_one(e), "top_logprobs": [_one(t) for t in e.top]} for e in entries]


def chat_logprobs(entries: Sequence[TokenLogprob] | None) -> dict[str, Any] | None:
    return None if entries is None else {"content": chat_content(entries)}


class LegacyLogprobs:
    """The legacy completion shape, built up token by token (text offsets count on)."""

    def __init__(self, offset: int = 0) -> None:
        self._offset = offset

    def render(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        offsets = []
        for entry in entries:
            offsets.append(self._offset)
            self._offset += len(entry.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{t.token: t.logprob for t in e.top} for e in entries],
            "text_offset": offsets,
        }
