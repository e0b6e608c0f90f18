"""LoRA adapters: the files of the ``lora/`` folder of the models directory.

``*.gguf`` adapters apply to GGUF models (llama.cpp), ``*.rkllm`` adapters to
``.rkllm`` models (``rkllm_load_lora``). An adapter is named by its file stem; the
model scan skips this folder (an adapter is not a model). Listing is a small
directory read, run off the event loop by the callers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .scan import LORA_FOLDER, MODEL_EXTENSIONS, _is_nameable

LORA_DIR = LORA_FOLDER


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    path: Path
    format: Literal["gguf", "rkllm"]
    size_bytes: int
    mtime: float


def lora_dir(models_dir: Path) -> Path:
    return models_dir / LORA_DIR


def list_adapters(models_dir: Path) -> list[Adapter]:
    folder = lora_dir(models_dir)
    found: list[Adapter] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # no lora folder: no adapters
        return []
    for de in entries:
        name, dot, ext = de.name.rpartition(".")
        if de.name.startswith(".") or not dot or f".{ext.lower()}" not in MODEL_EXTENSIONS:
            continue
        if not _is_nameable(de.name) or not de.is_file(follow_symlinks=False):
            continue  # links are not followed: an adapter cannot point out of the folder
        st = de.stat(follow_symlinks=False)
        kind: Literal["gguf", "rkllm"] = "gguf" if ext.lower() == "gguf" else "rkllm"
        found.append(Adapter(name, Path(de.path), kind, st.st_size, st.st_mtime))
    return sorted(found, key=lambda a: a.name)
