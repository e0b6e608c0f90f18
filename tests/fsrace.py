"""What a hostile member of the models dir's group does: swap entries, atomically.

``exchange`` is Linux's ``renameat2(..., RENAME_EXCHANGE)`` through ctypes: the two
names trade places in one step, so at every instant each name is one of the two
entries (a real folder or a symlink to somewhere else), never missing. ``Swapper``
does that in a loop in a thread, as fast as it can, until stopped; it always
leaves the two names as it found them.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

AT_FDCWD = -100
RENAME_EXCHANGE = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
_libc.renameat2.argtypes += [ctypes.c_uint]


def exchange(a: Path, b: Path) -> None:
    """Swap the entries named ``a`` and ``b`` (same filesystem), atomically."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(a))


class Swapper:
    """Exchanges ``a`` and ``b`` back and forth in a thread until ``stop``."""

    def __init__(self, a: Path, b: Path) -> None:
        self.a, self.b = a, b
        self.swaps = 0
        self.failures = 0  # a name was missing for a moment (the daemon replaced it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Swapper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                exchange(self.a, self.b)
            except OSError:
                self.failures += 1
                self._stop.wait(0.001)
                continue
            self.swaps += 1
            # Back at once: the swapped state lasts as long as the other one.
            try:
                exchange(self.a, self.b)
                self.swaps += 1
            except OSError:
                self.failures += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
