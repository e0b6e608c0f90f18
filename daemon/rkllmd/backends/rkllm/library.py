"""Find librkllmrt, tell which runtime version it is, and refuse the ones we cannot drive.

Lookup order (design.md): the configured ``rkllm.library``, then the dynamic
loader's search path, then ``/usr/lib/librkllmrt.so``. The version is read from
the library file (see ``rkllmd.rkllmrt``, shared with ``rkllmctl doctor``); the
``rkllm.version`` setting overrides that.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

from ...errors import BackendUnavailable, LoadFailed
from ...rkllmrt import LIBRARY_NAME, parse_runtime_version
from ...rkllmrt import SUPPORTED as SUPPORTED  # re-exported: loader and tests use them here
from ...rkllmrt import version_in_file as version_in_file
from .abi import ABIS, Abi

FALLBACK_PATH = Path("/usr/lib/librkllmrt.so")


@dataclass(frozen=True)
class Runtime:
    lib: ctypes.CDLL
    path: str
    version: str
    version_source: str  # "library" | "config"
    abi: Abi


def abi_for_version(version: str) -> Abi:
    """The ABI generation for a runtime version, or LoadFailed naming both."""
    parsed = parse_runtime_version(version)
    if parsed is None:
        raise LoadFailed(
            f"cannot understand RKLLM runtime version {version!r}; supported: {SUPPORTED}",
            runtime_version=version,
        )
    if parsed.abi is not None:
        return ABIS[parsed.abi]
    hint = ""
    if parsed[:2] < (1, 2) or parsed[:3] == (1, 2, 0) or parsed.suffix:
        hint = " (its C interface differs; install a supported runtime from rknn-llm)"
    raise LoadFailed(
        f"RKLLM runtime {version} is not supported{hint}; supported: {SUPPORTED}",
        runtime_version=version,
        supported=SUPPORTED,
    )


def _loaded_path(name: str) -> str | None:
    """Where the dynamic loader found ``name`` (from this process's memory map)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and Path(parts[5]).name.startswith(name):
            return parts[5]
    return None


def locate(configured: str | None) -> tuple[ctypes.CDLL, str]:
    """Open librkllmrt following the documented order; BackendUnavailable if absent."""
    if configured:
        if not Path(configured).is_file():
            raise BackendUnavailable("the library set in rkllm.library does not exist")
        return _open(configured), str(Path(configured).resolve())
    try:
        lib = ctypes.CDLL(LIBRARY_NAME)
    except OSError:
        pass
    else:
        return lib, _loaded_path(LIBRARY_NAME) or LIBRARY_NAME
    if FALLBACK_PATH.is_file():
        return _open(str(FALLBACK_PATH)), str(FALLBACK_PATH)
    raise BackendUnavailable(
        "librkllmrt.so (the RKLLM runtime) was not found: set rkllm.library, or install "
        "it on the loader path or in /usr/lib (see docs/board-setup.md)"
    )


def _open(path: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(path)
    except OSError as exc:
        reason = str(exc).replace(path, "the library")
        raise BackendUnavailable(f"librkllmrt.so could not be opened: {reason}") from None


def open_runtime(configured: str | None, version_override: str | None) -> Runtime:
    lib, path = locate(configured)
    if version_override:
        version, source = version_override, "config"
    else:
        found = version_in_file(path)
        if found is None:
            raise LoadFailed(_unknown_version_message(lib))
        version, source = found, "library"
    abi = abi_for_version(version)
    missing = [n for n in ("rkllm_get_kv_cache_size", "rkllm_run") if not hasattr(lib, n)]
    if missing:
        raise LoadFailed(
            f"the library claims RKLLM runtime {version} but lacks {', '.join(missing)}; "
            f"supported: {SUPPORTED}"
        )
    return Runtime(lib, path, version, source, abi)


def _unknown_version_message(lib: ctypes.CDLL) -> str:
    if not hasattr(lib, "rkllm_set_chat_template"):
        era = "it looks older than 1.2 (no rkllm_set_chat_template)"
    elif not hasattr(lib, "rkllm_get_kv_cache_size"):
        era = "it looks like 1.2.0 (no rkllm_get_kv_cache_size)"
    else:
        era = "1.2.1+ and 1.3 export the same symbols, so the layout cannot be guessed"
    return (
        f"cannot tell which RKLLM runtime version librkllmrt.so is: {era}. "
        f"Set rkllm.version in the config; supported: {SUPPORTED}"
    )
