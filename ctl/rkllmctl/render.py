"""Human output: sizes, durations, times, aligned tables, a progress line."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, TextIO

SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_size(size: Any) -> str:
    """Bytes in binary units with one decimal: ``98342912`` -> ``93.8 MiB``."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        return "-"
    if size < 1024:
        return f"{int(size)} B"
    value = float(size)
    for unit in SIZE_UNITS:
        value /= 1024
        if round(value, 1) < 1024 or unit == SIZE_UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def format_duration(seconds: Any) -> str:
    """``3725`` -> ``1h 02m 05s``; the two most significant parts past an hour."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return "-"
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def format_time(value: Any) -> str:
    """An ISO 8601 string or a Unix time as local ``YYYY-MM-DD HH:MM``."""
    if value is None or value == "":
        return "-"
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value)
        else:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone()
    except (ValueError, OverflowError, OSError):
        return str(value)
    return moment.strftime("%Y-%m-%d %H:%M")


def format_value(value: Any) -> str:
    """A scalar for a key/value line (``None`` -> ``-``, bools -> yes/no)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={format_value(v)}" for k, v in value.items()) or "-"
    return str(value)


def key_values(pairs: Iterable[tuple[str, str]], indent: str = "") -> list[str]:
    """Aligned ``key: value`` lines; multi-line values continue indented below."""
    items = list(pairs)
    width = max((len(key) for key, _ in items), default=0) + 1
    lines: list[str] = []
    for key, value in items:
        label = f"{key}:".ljust(width)
        first, *rest = value.split("\n") if value else [""]
        lines.append(f"{indent}{label} {first}".rstrip())
        pad = indent + " " * (width + 1)
        lines.extend(f"{pad}{more}".rstrip() for more in rest)
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces, no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell))
    lines = []
    for row in (headers, *rows):
        cells = (cell.ljust(widths[i]) for i, cell in enumerate(row))
        lines.append("  ".join(cells).rstrip())
    return lines


def is_tty(stream: Any) -> bool:
    """``stream.isatty()``, false for anything that cannot say."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def terminal_width(stream: TextIO, default: int = 80) -> int:
    try:
        return max(os.get_terminal_size(stream.fileno()).columns, 20)
    except (AttributeError, ValueError, OSError):
        return default


class ProgressView:
    """Renders ``progress`` notifications: a block of lines redrawn in place on a TTY,
    plain lines otherwise (one per step). Subclasses choose the lines; this one draws
    a stage, a bar and a message."""

    BAR_WIDTH = 24

    def __init__(self, stream: TextIO, tty: bool | None = None) -> None:
        self._stream = stream
        self._tty = is_tty(stream) if tty is None else tty
        self._width = terminal_width(stream) if self._tty else 80
        self._lines = 0  # lines drawn by the last redraw
        self._said: object = None  # the step of the last plain line

    def on_notification(self, method: str, params: dict[str, Any]) -> None:
        """Notification callback for :meth:`Connection.call`."""
        if method == "progress":
            self.update(params)

    def update(self, event: dict[str, Any]) -> None:
        if self._tty:
            self._draw([line[: self._width - 1] for line in self.lines(event)])
            return
        step, text = self.plain(event)
        if step != self._said:
            self._said = step
            self._stream.write(text + "\n")
            self._stream.flush()

    def lines(self, event: dict[str, Any]) -> list[str]:
        """What a terminal shows for one event."""
        stage, message = str(event.get("stage") or ""), str(event.get("message") or "")
        fraction = clamp_fraction(event.get("fraction"))
        if fraction is None:
            return [f"{stage} {message}".rstrip()]
        return [f"{stage} {progress_bar(fraction, self.BAR_WIDTH)} {message}".rstrip()]

    def plain(self, event: dict[str, Any]) -> tuple[object, str]:
        """The step an event belongs to, and the line written when a new step starts."""
        stage, message = str(event.get("stage") or ""), str(event.get("message") or "")
        text = f"{stage}: {message}" if message else stage
        fraction = clamp_fraction(event.get("fraction"))
        if fraction is not None:
            text += f" ({fraction * 100:.0f}%)"
        return (stage, message), text

    def _draw(self, lines: list[str]) -> None:
        # Back to the first line of the block, rewrite it, clear whatever is left below.
        up = "\x1b[1A" * (self._lines - 1) if self._lines > 1 else ""
        self._stream.write(up + "\r" + "\x1b[K\n".join(lines) + "\x1b[J")
        self._stream.flush()
        self._lines = len(lines)

    def finish(self) -> None:
        """Clear the block so later output starts on a clean line."""
        if self._lines:
            self._stream.write("\x1b[1A" * (self._lines - 1) + "\r\x1b[J")
            self._stream.flush()
            self._lines = 0


def progress_bar(fraction: float, width: int) -> str:
    """``[#####-----]  50%`` for a fraction in [0, 1]."""
    filled = round(fraction * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def clamp_fraction(value: Any) -> float | None:
    """A number clamped to [0, 1]; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return min(max(float(value), 0.0), 1.0)
