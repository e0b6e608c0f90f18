"""Turn a stream of token bytes into safe text pieces, honouring stop strings.

Pure Python, shared by every backend: UTF-8 sequences split across tokens are
joined before anything is emitted, and text that might be the start of a stop
string is held back until it is known not to be one.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class TextStream:
    def __init__(self, stop: Sequence[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = [s for s in stop if s]
        self._held = ""
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add token bytes; return the text that is now safe to emit."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        return self._release()

    def finish(self) -> str:
        """End of generation: flush the held text (unless a stop string hit).

        Bytes of a character cut off by the token budget are dropped rather than
        shown as a replacement character.
        """
        if self.stopped:
            return ""
        self._decoder.reset()
        text, self._held = self._held, ""
        return text

    def _release(self) -> str:
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            text, self._held = self._held[:cut], ""
            return text
        keep = self._partial_stop_suffix()
        split = len(self._held) - keep
        text, self._held = self._held[:split], self._held[split:]
        return text

    def _first_stop(self) -> int | None:
        hits = [i for i in (self._held.find(s) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop_suffix(self) -> int:
        """Length of the longest tail of the held text that starts some stop string."""
        longest = 0
        for stop in self._stop:
            for size in range(min(len(stop) - 1, len(self._held)), longest, -1):
                if stop.startswith(self._held[-size:]):
                    longest = size
                    break
        return longest
