"""Reading a GGUF header without loading the model: the real SmolLM2 file, headers
written here key by key, and damaged files (never an error, just no facts)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from rkllmd.catalog.gguf import GgufFacts, HeaderCache, read_facts

from tests.helpers import model_source

Value = str | int | float | bool | list[str] | list[int]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(value: Value) -> bytes:
    if isinstance(value, bool):
        return struct.pack("<I?", 7, value)
    if isinstance(value, int):
        return struct.pack("<II", 4, value)
    if isinstance(value, float):
        return struct.pack("<If", 6, value)
    if isinstance(value, str):
        return struct.pack("<I", 8) + _string(value)
    if value and isinstance(value[0], str):
        return struct.pack("<IIQ", 9, 8, len(value)) + b"".join(_string(v) for v in value)  # type: ignore[arg-type]
    return struct.pack("<IIQ", 9, 5, len(value)) + b"".join(struct.pack("<i", v) for v in value)  # type: ignore[arg-type]


def gguf(keys: dict[str, Value], *, version: int = 3, count: int | None = None) -> bytes:
    body = b"".join(_string(k) + _value(v) for k, v in keys.items())
    return b"GGUF" + struct.pack("<IQQ", version, 0, len(keys) if count is None else count) + body


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_the_real_smollm2_header() -> None:
    facts = read_facts(model_source())
    assert facts == GgufFacts(
        architecture="llama",
        name="Smollm2 135M 8k Lc100K Mix1 Ep2",
        size_label="135M",
        context_length=8192,
        quantization="Q4_1",
    )
    assert facts.type == "chat"


def test_keys_after_arrays_and_an_embedding_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        gguf(
            {
                "general.architecture": "bert",
                "general.languages": ["en", "de"],
                "general.tags": [1, 2, 3],
                "general.name": "MiniLM",
                "general.description": "Sentence embeddings",
                "bert.context_length": 512,
                "bert.pooling_type": 1,
                "general.file_type": 1,
                "tokenizer.ggml.model": "bert",
                "general.size_label": "never read: after the tokenizer",
            }
        ),
    )
    facts = read_facts(path)
    assert facts is not None
    assert (facts.name, facts.description, facts.context_length) == (
        "MiniLM",
        "Sentence embeddings",
        512,
    )
    assert (facts.quantization, facts.type, facts.size_label) == ("F16", "embedding", None)


def test_a_pooling_llama_embeds_and_whisper_hears(tmp_path: Path) -> None:
    pooled = gguf({"general.architecture": "qwen2", "qwen2.pooling_type": 3})
    assert read_facts(write(tmp_path, pooled)).type == "embedding"  # type: ignore[union-attr]
    hears = gguf({"general.architecture": "whisper"})
    assert read_facts(write(tmp_path, hears)).type == "speech"  # type: ignore[union-attr]
    nothing = gguf({"general.name": "no architecture"})
    assert read_facts(write(tmp_path, nothing)).type is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"GGUF",
        b"GGML" + b"\x00" * 40,
        gguf({"general.name": "x"}, version=7),
        gguf({"general.name": "x"}, count=5),  # promises more keys than it has
        gguf({"general.name": "x"})[:-1],  # cut inside a value
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40),  # absurd length
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + struct.pack("<I", 99),
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _string("k") + b"\x08\x00\x00\x00\x02\x00"
        b"\x00\x00\x00\x00\x00\x00\xff\xfe",  # not UTF-8
    ],
)
def test_damaged_headers_give_no_facts(tmp_path: Path, data: bytes) -> None:
    assert read_facts(write(tmp_path, data)) is None


def test_absurd_context_is_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, gguf({"general.architecture": "llama", "llama.context_length": 0}))
    assert read_facts(path).context_length is None  # type: ignore[union-attr]


def test_cache_reads_each_file_version_once(tmp_path: Path) -> None:
    path = write(tmp_path, gguf({"general.architecture": "llama", "general.name": "one"}))
    cache = HeaderCache()
    sig = (str(path), path.stat().st_size, path.stat().st_mtime_ns)
    assert cache.facts(*sig).name == "one"  # type: ignore[union-attr]
    path.write_bytes(gguf({"general.architecture": "llama", "general.name": "two"}))
    assert cache.facts(*sig).name == "one"  # type: ignore[union-attr]  # same signature: cached
    new = (str(path), path.stat().st_size, path.stat().st_mtime_ns + 1)
    assert cache.facts(*new).name == "two"  # type: ignore[union-attr]
    cache.retain({new})
    path.unlink()
    assert cache.facts(*sig) is None  # forgotten, and the file is gone
