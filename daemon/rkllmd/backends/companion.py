"""The file that gives a model its eyes: found next to the model at load.

A llama.cpp model sees through a multimodal projector (``*mmproj*.gguf``), an RKLLM
model through a ``.rknn`` vision encoder. Either sits in the model's folder; the
owner's sidecar ``<model stem>.rkllmd.json`` may name it (``"projector": "<file
name>"``, a plain name in the same folder) when the folder holds several or the name
says nothing. Without a sidecar, a single candidate is taken; among several, the one
whose name shares the longest start with the model's (``Qwen2-VL-2B-Q4.gguf`` pairs
with ``Qwen2-VL-2B-mmproj-f16.gguf``), ties broken by name so the choice is stable.
"""

from __future__ import annotations

import json
from pathlib import Path

SIDECAR_SUFFIX = ".rkllmd.json"
SIDECAR_KEY = "projector"
_SIDECAR_MAX_BYTES = 1024 * 1024


def find_companion(model: Path, suffix: str, marker: str = "") -> Path | None:
    """The projector/encoder paired with ``model``: a file in its folder ending in
    ``suffix`` (and containing ``marker``, case-insensitive), or the sidecar's choice."""
    named = _sidecar_choice(model)
    if named is not None:
        return named
    candidates = [
        entry
        for entry in sorted(p.name for p in model.parent.iterdir())
        if entry != model.name
        and entry.lower().endswith(suffix)
        and marker in entry.lower()
        and (model.parent / entry).is_file()
    ]
    if not candidates:
        return None
    stem = model.stem.lower()
    best = max(candidates, key=lambda name: (_shared_start(stem, name.lower()), _neg(name)))
    return model.parent / best


def _sidecar_choice(model: Path) -> Path | None:
    sidecar = model.parent / f"{model.stem}{SIDECAR_SUFFIX}"
    try:
        if sidecar.stat().st_size > _SIDECAR_MAX_BYTES:
            return None
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = data.get(SIDECAR_KEY) if isinstance(data, dict) else None
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        return None
    path = model.parent / name
    return path if path.is_file() else None


def _shared_start(a: str, b: str) -> int:
    shared = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        shared += 1
    return shared


def _neg(name: str) -> tuple[int, ...]:
    """Sorts names so that max() prefers the alphabetically first."""
    return tuple(-ord(c) for c in name)
