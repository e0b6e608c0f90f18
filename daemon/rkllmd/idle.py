"""The keep-alive countdown: unload the resident model after it sat unused.

One timer at a time; re-arming after every use restarts it. The deadline is kept
for status and Ollama's ``expires_at``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta


class IdleTimer:
    def __init__(self) -> None:
        self._handle: asyncio.TimerHandle | None = None
        self.deadline: datetime | None = None  # None: no unload planned

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.deadline = None

    def arm(self, seconds: float, on_idle: Callable[[], None]) -> None:
        """Call ``on_idle`` after ``seconds`` (math.inf: never), replacing any countdown."""
        self.cancel()
        if math.isinf(seconds):
            return
        self._handle = asyncio.get_running_loop().call_later(seconds, self._fire, on_idle)
        self.deadline = datetime.now(UTC) + timedelta(seconds=seconds)

    def _fire(self, on_idle: Callable[[], None]) -> None:
        self._handle = None
        on_idle()
