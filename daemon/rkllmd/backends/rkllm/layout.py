"""Struct size checks: ctypes vs the sizes rkllm.h has on the running ABI.

``EXPECTED`` holds the sizes compiled from each release's header for aarch64
(LP64) and armhf (ILP32). ``computed_layout`` lays a ctypes struct out for a
given pointer width with the C rules, so tests can check the armhf table on a
64-bit host and the host check works on any LP64/ILP32 machine (x86_64 lays
these structs out exactly like aarch64: no member needs more than 8-byte
alignment and all are naturally aligned).
"""

from __future__ import annotations

import ctypes
import platform
from typing import Any

from ...errors import LoadFailed
from .abi import Abi

_COMMON = {"RKLLMExtendParam": (120, 120), "RKLLMResult": (72, 52), "RKLLMPerfStat": (20, 20)}
# name -> (aarch64, armhf)
EXPECTED: dict[str, dict[str, tuple[int, int]]] = {
    "1.3": {
        **_COMMON,
        "RKLLMParam": (184, 176),
        "RKLLMInput": (160, 84),
        "RKLLMInferParam": (40, 24),
        "RKLLMCallback": (48, 24),
        "RKLLMLoraAdapter": (24, 12),
        "RKLLMSamplingParam": (36, 36),
    },
    "1.2": {
        **_COMMON,
        "RKLLMParam": (208, 188),
        "RKLLMInput": (64, 36),
        "RKLLMInferParam": (32, 16),
        "RKLLMLoraAdapter": (24, 12),
    },
}

_POINTERISH = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t)


def _scalar(kind: Any, pointer_size: int) -> tuple[int, int]:
    if kind in _POINTERISH or issubclass(kind, ctypes._Pointer) or hasattr(kind, "_restype_"):
        return pointer_size, pointer_size
    size = ctypes.sizeof(kind)
    return size, size


def computed_layout(kind: Any, pointer_size: int) -> tuple[int, int, dict[str, int]]:
    """(size, alignment, field offsets) of a ctypes type under the C rules."""
    if issubclass(kind, ctypes.Array):
        size, align, _ = computed_layout(kind._type_, pointer_size)
        return size * kind._length_, align, {}
    if not issubclass(kind, ctypes.Structure | ctypes.Union):
        size, align = _scalar(kind, pointer_size)
        return size, align, {}
    is_union = issubclass(kind, ctypes.Union)
    offset = size = align = 0
    offsets: dict[str, int] = {}
    for name, member, *_ in kind._fields_:
        m_size, m_align, _ = computed_layout(member, pointer_size)
        align = max(align, m_align)
        if is_union:
            offsets[name] = 0
            size = max(size, m_size)
            continue
        offset = -(-offset // m_align) * m_align
        offsets[name] = offset
        offset += m_size
        size = offset
    align = max(align, 1)
    return -(-size // align) * align, align, offsets


def host_abi() -> str:
    """ "aarch64", "armhf", or a description of another host ("x86_64/lp64")."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    if machine.startswith("armv7") or machine.startswith("armv8l") or machine == "armhf":
        return "armhf"
    model = "lp64" if ctypes.sizeof(ctypes.c_void_p) == 8 else "ilp32"
    return f"{machine or 'unknown'}/{model}"


def expected_sizes(abi: Abi, host: str | None = None) -> dict[str, int]:
    """Sizes the header gives on this host: the table, or computed for other hosts."""
    host = host or host_abi()
    table = EXPECTED[abi.name]
    if host == "aarch64":
        return {name: sizes[0] for name, sizes in table.items()}
    if host == "armhf":
        return {name: sizes[1] for name, sizes in table.items()}
    width = ctypes.sizeof(ctypes.c_void_p)
    return {name: computed_layout(kind, width)[0] for name, kind in abi.structs().items()}


def check_sizes(abi: Abi) -> dict[str, int]:
    """Compare ctypes' sizes with the expected ones; LoadFailed on any mismatch."""
    host = host_abi()
    expected = expected_sizes(abi, host)
    actual = {name: ctypes.sizeof(kind) for name, kind in abi.structs().items()}
    wrong = [
        f"{name} is {actual[name]} bytes, expected {size}"
        for name, size in expected.items()
        if actual.get(name) != size
    ]
    if wrong:
        raise LoadFailed(
            f"the RKLLM {abi.name} binding does not match the C layout on {host}: "
            + "; ".join(wrong)
        )
    return actual
