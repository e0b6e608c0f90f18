"""Which projector/encoder pairs with a model: the sidecar's choice, a single
candidate, or the one whose name starts most like the model's."""

from __future__ import annotations

import json
from pathlib import Path

from rkllmd.backends.companion import find_companion


def touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"x")


def test_a_single_projector_next_to_the_model(tmp_path: Path) -> None:
    touch(tmp_path, "model.gguf", "mmproj-model-f16.gguf", "notes.txt")
    assert find_companion(tmp_path / "model.gguf", ".gguf", "mmproj") == (
        tmp_path / "mmproj-model-f16.gguf"
    )
    assert find_companion(tmp_path / "model.gguf", ".rknn") is None


def test_no_projector_means_no_vision(tmp_path: Path) -> None:
    touch(tmp_path, "model.gguf", "other.gguf")
    assert find_companion(tmp_path / "model.gguf", ".gguf", "mmproj") is None


def test_among_several_the_name_that_starts_alike_wins(tmp_path: Path) -> None:
    touch(tmp_path, "Qwen2-VL-2B-Q4.gguf", "Gemma-mmproj.gguf", "Qwen2-VL-2B-mmproj-f16.gguf")
    chosen = find_companion(tmp_path / "Qwen2-VL-2B-Q4.gguf", ".gguf", "mmproj")
    assert chosen == tmp_path / "Qwen2-VL-2B-mmproj-f16.gguf"


def test_the_sidecar_names_it(tmp_path: Path) -> None:
    touch(tmp_path, "model.rkllm", "a.rknn", "vision.rknn")
    sidecar = tmp_path / "model.rkllmd.json"
    sidecar.write_text(json.dumps({"projector": "vision.rknn"}))
    assert find_companion(tmp_path / "model.rkllm", ".rknn") == tmp_path / "vision.rknn"
    # A name outside the folder or a missing file is ignored (the folder is searched).
    sidecar.write_text(json.dumps({"projector": "../vision.rknn"}))
    assert find_companion(tmp_path / "model.rkllm", ".rknn") == tmp_path / "a.rknn"
    sidecar.write_text("{not json")
    assert find_companion(tmp_path / "model.rkllm", ".rknn") == tmp_path / "a.rknn"
