"""What is known about librkllmrt without loading it: its name, the runtime versions
rkllmd can drive, and how to read the version a library file carries.

Stdlib only and cheap to import: shared by the worker's RKLLM backend (which then
opens the library with ctypes) and by ``rkllmctl doctor``, which must stay light.
The RKLLM header has no version query, so the version is read from the library file
itself (the runtime embeds the ``rkllm-runtime version: X`` banner it prints at init).
1.2.x and 1.3.x export the same symbols with different struct layouts, so the version
alone decides the C interface; guessing is never done.
"""

from __future__ import annotations

import mmap
import os
import re
from pathlib import Path
from typing import NamedTuple

LIBRARY_NAME = "librkllmrt.so"
SUPPORTED = "1.2.1, 1.2.2, 1.2.3 and 1.3.x"
_BANNER = re.compile(rb"rkllm-runtime version:?\s*v?(\d+\.\d+\.\d+[0-9a-zA-Z.+-]*)")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)([0-9a-zA-Z.+-]*)$")


class RuntimeVersion(NamedTuple):
    major: int
    minor: int
    patch: int
    suffix: str  # what follows X.Y.Z ("b1", "-rc2"); empty for a release

    @property
    def abi(self) -> str | None:
        """``"1.2"`` or ``"1.3"``: the C interface of a runtime rkllmd drives; else None."""
        if (self.major, self.minor) == (1, 3):
            return "1.3"
        if (self.major, self.minor) == (1, 2) and 1 <= self.patch <= 3 and not self.suffix:
            return "1.2"
        return None


def parse_runtime_version(text: str) -> RuntimeVersion | None:
    """``"v1.2.3"`` -> ``RuntimeVersion(1, 2, 3, "")``; None if it is no X.Y.Z version."""
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return RuntimeVersion(int(match[1]), int(match[2]), int(match[3]), match[4])


def version_in_file(path: str | os.PathLike[str]) -> str | None:
    """The runtime version embedded in the library file, if exactly one is there."""
    try:
        with (
            Path(path).open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            found = {v.decode("ascii", "replace") for v in _BANNER.findall(data)}
    except (OSError, ValueError):
        return None
    return found.pop() if len(found) == 1 else None
