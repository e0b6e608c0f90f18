"""systemd notifications (READY, STATUS, WATCHDOG, STOPPING) through sdnotify.

sdnotify encodes as latin-1 and silently drops what does not encode, so STATUS
is reduced to printable ASCII and WATCHDOG=1 always travels alone.
"""

from __future__ import annotations

import os

import sdnotify


def ascii_line(text: str, limit: int = 200) -> str:
    cleaned = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return cleaned[:limit]


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None

    def _send(self, message: str) -> None:
        if self._sd is not None:
            self._sd.notify(message)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={ascii_line(status)}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={ascii_line(status)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")

    def reloading(self) -> None:
        self._send("RELOADING=1")

    def reloaded(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={ascii_line(status)}")

    def extend_timeout(self, seconds: float) -> None:
        self._send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half the configured watchdog period, when systemd set one for us."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000
