"""What a GGUF file says about itself, read from its header without loading it.

A GGUF file starts with key/value metadata: ``general.*`` (name, size label, file
type), then ``<architecture>.*`` (context length, pooling), then ``tokenizer.*``
(tens of thousands of tokens and merges). Everything the catalogue wants comes
before the tokenizer, so reading stops at the first ``tokenizer.`` key: a few
kilobytes per file, read once per (path, size, mtime) and cached by the registry.

Runs in the registry's scan thread. Any damage (short file, bad magic, absurd
lengths) makes the header unknown, never an error: the model stays listed and the
backend reports the problem if someone loads it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..safefs import open_regular

MAGIC = b"GGUF"
_MAX_KEYS = 4096
_MAX_STRING = 1 << 20  # a longer key or value means the header is not what we think
_MAX_ARRAY = 1 << 24
_STOP_PREFIX = "tokenizer."

# GGUF value types: fixed-size scalars by struct format, 8 = string, 9 = array.
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9

# llama.cpp's llama_ftype values (llama.h) as the quantisation names people know.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip
# Architectures that only embed (encoders), and those that only hear.
ENCODERS = frozenset(
    {"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2", "neo-bert", "t5encoder"}
)
SPEECH = frozenset({"whisper"})

Value = str | int | float | bool | None


class _Damaged(Exception):
    pass


@dataclass(frozen=True, slots=True)
class GgufFacts:
    architecture: str | None = None
    name: str | None = None
    description: str | None = None
    size_label: str | None = None  # "135M", "7B"
    context_length: int | None = None  # the training context (<arch>.context_length)
    quantization: str | None = None  # from general.file_type
    pooling: bool = False  # <arch>.pooling_type says it pools: an embedding model

    @property
    def type(self) -> str | None:
        if self.architecture is None:
            return None
        if self.architecture in SPEECH:
            return "speech"
        if self.architecture in ENCODERS or self.pooling:
            return "embedding"
        return "chat"


class HeaderCache:
    """Facts by file signature (real path, size, mtime): each file is read once.

    Owned by one registry and used by its scan thread only (scans never overlap)."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, int, int], GgufFacts | None] = {}

    def facts(self, realpath: str, size: int, mtime_ns: int) -> GgufFacts | None:
        key = (realpath, size, mtime_ns)
        if key not in self._known:
            self._known[key] = read_facts(Path(realpath))
        return self._known[key]

    def retain(self, keys: set[tuple[str, int, int]]) -> None:
        """Forget files that are gone or changed (called after each walk)."""
        for key in self._known.keys() - keys:
            del self._known[key]


def read_facts(path: Path) -> GgufFacts | None:
    """The header's facts, or None when the file is not a readable GGUF."""
    try:
        # Never blocks on a FIFO swapped in after the walk's stat, never follows a link.
        with os.fdopen(open_regular(path), "rb") as handle:
            return _facts(_metadata(handle))
    except (OSError, _Damaged, struct.error, UnicodeDecodeError):
        return None


def _facts(meta: dict[str, Value]) -> GgufFacts:
    arch = _text(meta.get("general.architecture"))
    context = meta.get(f"{arch}.context_length") if arch else None
    pooling = meta.get(f"{arch}.pooling_type") if arch else None
    file_type = meta.get("general.file_type")
    return GgufFacts(
        architecture=arch,
        name=_text(meta.get("general.name")),
        description=_text(meta.get("general.description")),
        size_label=_text(meta.get("general.size_label")),
        context_length=context if _positive_int(context) else None,  # type: ignore[arg-type]
        quantization=FILE_TYPES.get(file_type) if isinstance(file_type, int) else None,
        pooling=isinstance(pooling, int) and not isinstance(pooling, bool) and pooling > 0,
    )


def _positive_int(value: Value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 24


def _text(value: Value) -> str | None:
    return value.strip()[:256] or None if isinstance(value, str) else None


def _metadata(handle: BinaryIO) -> dict[str, Value]:
    if handle.read(4) != MAGIC:
        raise _Damaged("not GGUF")
    version, _tensors, count = struct.unpack("<IQQ", _exactly(handle, 20))
    if version not in (2, 3) or count > _MAX_KEYS:
        raise _Damaged("unsupported header")
    meta: dict[str, Value] = {}
    for _ in range(count):
        key = _string(handle)
        if key.startswith(_STOP_PREFIX):
            break  # the tokenizer's arrays follow; nothing after it is needed
        (kind,) = struct.unpack("<I", _exactly(handle, 4))
        meta[key] = _value(handle, kind)
    return meta


def _value(handle: BinaryIO, kind: int) -> Value:
    if kind == _STRING:
        return _string(handle)
    if kind == _ARRAY:
        inner, length = struct.unpack("<IQ", _exactly(handle, 12))
        if length > _MAX_ARRAY:
            raise _Damaged("array too long")
        # Arrays (languages, tags) are not needed: skipped, numbers in one seek.
        fmt = _SCALARS.get(inner)
        if fmt is not None:
            handle.seek(length * struct.calcsize(fmt), 1)
            return None
        for _ in range(length):
            _value(handle, inner)
        return None
    fmt = _SCALARS.get(kind)
    if fmt is None:
        raise _Damaged(f"unknown value type {kind}")
    value: Value = struct.unpack("<" + fmt, _exactly(handle, struct.calcsize(fmt)))[0]
    return value


def _string(handle: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", _exactly(handle, 8))
    if length > _MAX_STRING:
        raise _Damaged("string too long")
    return _exactly(handle, length).decode("utf-8")


def _exactly(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise _Damaged("short header")
    return data
