"""The Responses API's memory: answers kept for ``previous_response_id`` and GET.

Bounded by ``[responses]``: at most ``max_stored`` answers (the oldest go first), each
for ``ttl_seconds``. In memory only; read per call, so a reload applies at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from ..config import ResponsesSection
from ..errors import ResponseNotFound
from ..requests import ChatMessage


@dataclass(frozen=True, slots=True)
class Stored:
    body: dict[str, Any]  # the response object as served
    history: tuple[ChatMessage, ...]  # the conversation so far, the answer included
    saved_at: float  # time.monotonic()


class ResponseStore:
    def __init__(self) -> None:
        self._items: OrderedDict[str, Stored] = OrderedDict()

    def put(
        self, limits: ResponsesSection, body: dict[str, Any], history: tuple[ChatMessage, ...]
    ) -> None:
        self._expire(limits)
        if limits.max_stored == 0:
            return
        self._items[body["id"]] = Stored(body, history, time.monotonic())
        while len(self._items) > limits.max_stored:
            self._items.popitem(last=False)

    def get(self, limits: ResponsesSection, response_id: str) -> Stored:
        self._expire(limits)
        found = self._items.get(response_id)
        if found is None:
            raise ResponseNotFound(f"no stored response {response_id[:80]!r}", param="id")
        return found

    def delete(self, limits: ResponsesSection, response_id: str) -> None:
        self.get(limits, response_id)
        del self._items[response_id]

    def _expire(self, limits: ResponsesSection) -> None:
        oldest_kept = time.monotonic() - limits.ttl_seconds
        while self._items:
            first = next(iter(self._items.values()))
            if first.saved_at >= oldest_kept:
                break
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
