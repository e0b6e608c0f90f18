"""ModelRegistry against real files and a real watchfiles watcher."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.errors import AmbiguousModel, InvalidModelName, ModelNotFound

OLD = 60.0  # seconds: an mtime this old is past any settle window
# How long to wait for a change the registry must notice on its own (a re-check timer, a
# watcher event, a rescan). A deadline, not a timing: a loaded machine can take seconds.
NOTICE = 30.0


def put(path: Path, data: bytes = b"GGUF", age: float | None = OLD) -> Path:
    """Write a file; with `age`, backdate its mtime so it counts as finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if age is not None:
        then = time.time() - age
        os.utime(path, (then, then))
    return path


def ids(reg: ModelRegistry) -> list[str]:
    return [e.id for e in reg.entries()]


def sizes(reg: ModelRegistry) -> list[int]:
    return [e.size_bytes for e in reg.entries()]


async def scanned(models: Path, **kwargs: Any) -> ModelRegistry:
    reg = ModelRegistry(models, **kwargs)
    await reg.scan()
    return reg


async def until(pred: Callable[[], bool], deadline: float) -> bool:
    """Poll `pred` on the loop until it holds or `deadline` seconds pass."""
    end = time.monotonic() + deadline
    while not pred():
        if time.monotonic() > end:
            return False
        await asyncio.sleep(0.02)
    return True


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models"
    path.mkdir()
    return path


# --- ids ---------------------------------------------------------------------------


async def test_ids_are_file_names_without_extension(models: Path) -> None:
    put(models / "SmolLM2-135M-Instruct.Q4_1.gguf", b"GGUF1234")
    put(models / "qwen.rkllm")
    put(models / "sub" / "deep" / "Phi.GGUF")
    reg = await scanned(models)

    assert ids(reg) == ["Phi", "SmolLM2-135M-Instruct.Q4_1", "qwen"]
    smol = reg.resolve("SmolLM2-135M-Instruct.Q4_1")
    assert smol.relpath == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert smol.path == (models / smol.relpath).resolve()
    assert (smol.format, smol.size_bytes) == ("gguf", 8)
    assert reg.resolve("qwen").format == "rkllm"
    phi = reg.resolve("Phi")
    assert (phi.relpath, phi.format) == ("sub/deep/Phi.GGUF", "gguf")

    assert smol.meta.source is None and smol.meta.aliases == ()  # metadata: tests/store
    modified = datetime.fromisoformat(smol.modified)
    assert modified.utcoffset() == timedelta(0)
    assert abs(modified.timestamp() - (time.time() - OLD)) < 5


async def test_shared_stems_use_relative_paths(models: Path) -> None:
    for rel in ("a/x.gguf", "b/x.rkllm", "x.gguf", "y.gguf"):
        put(models / rel)
    reg = await scanned(models)

    assert ids(reg) == ["a/x", "b/x", "x", "y"]
    assert reg.resolve("a/x").relpath == "a/x.gguf"
    assert reg.resolve("b/x").relpath == "b/x.rkllm"
    assert reg.resolve("x").relpath == "x.gguf"
    assert reg.resolve("y").relpath == "y.gguf"


async def test_shared_stem_alone_is_ambiguous(models: Path) -> None:
    put(models / "a" / "x.gguf")
    put(models / "b" / "x.rkllm")
    reg = await scanned(models)

    with pytest.raises(AmbiguousModel) as info:
        reg.resolve("x")
    assert info.value.details["candidates"] == ["a/x", "b/x"]


async def test_same_folder_same_stem_keeps_extension(models: Path) -> None:
    put(models / "c" / "z.gguf")
    put(models / "c" / "z.rkllm")
    reg = await scanned(models)

    assert ids(reg) == ["c/z.gguf", "c/z.rkllm"]
    assert reg.resolve("c/z.rkllm").format == "rkllm"
    assert reg.resolve("c/z.gguf").format == "gguf"


# --- resolution --------------------------------------------------------------------


@pytest.fixture
async def library(models: Path) -> ModelRegistry:
    for rel in (
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "Qwen2.5-1.5B.rkllm",
        "Qwen2.5-3B.rkllm",
        "sub/deep/Phi-3.gguf",
    ):
        put(models / rel)
    return await scanned(models)


@pytest.mark.parametrize(
    ("name", "relpath"),
    [
        ("SmolLM2-135M-Instruct.Q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # exact id
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # file name
        ("Phi-3.gguf", "sub/deep/Phi-3.gguf"),  # file name of a nested file
        ("sub/deep/Phi-3.gguf", "sub/deep/Phi-3.gguf"),  # relpath
        ("sub/deep/Phi-3", "sub/deep/Phi-3.gguf"),  # relpath without extension
        ("smollm2-135m-instruct.q4_1", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # any case
        ("QWEN2.5-3B", "Qwen2.5-3B.rkllm"),
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # unique prefix
        ("phi", "sub/deep/Phi-3.gguf"),
        ("qwen2.5-1", "Qwen2.5-1.5B.rkllm"),
        ("135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),  # a word inside the id
    ],
)
async def test_resolve_finds(library: ModelRegistry, name: str, relpath: str) -> None:
    assert library.resolve(name).relpath == relpath


async def test_resolve_ambiguous_prefix_lists_candidates(library: ModelRegistry) -> None:
    with pytest.raises(AmbiguousModel) as info:
        library.resolve("qwen")
    assert info.value.details["candidates"] == ["Qwen2.5-1.5B", "Qwen2.5-3B"]
    assert "'qwen'" in info.value.message
    assert "Qwen2.5-3B" in info.value.message


async def test_resolve_words_inside_ids_only_at_word_starts(library: ModelRegistry) -> None:
    with pytest.raises(AmbiguousModel) as info:
        library.resolve("3")  # Phi-3 and Qwen2.5-3B
    assert info.value.details["candidates"] == ["Phi-3", "Qwen2.5-3B"]
    with pytest.raises(ModelNotFound):
        library.resolve("mLM2")  # inside a word, not at its start
    with pytest.raises(ModelNotFound):
        library.resolve("test")  # what RockchipLlama's clients send


async def test_resolve_unknown_lists_available(library: ModelRegistry, models: Path) -> None:
    with pytest.raises(ModelNotFound) as info:
        library.resolve("llama")
    assert info.value.details["available"] == ids(library)
    assert len(info.value.details["available"]) == 4
    assert "'llama'" in info.value.message
    assert str(models) not in info.value.message
    assert info.value.to_data()["code"] == "model_not_found"


async def test_resolve_on_empty_registry(models: Path) -> None:
    reg = await scanned(models)
    with pytest.raises(ModelNotFound) as info:
        reg.resolve("anything")
    assert info.value.details["available"] == []


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "/etc/passwd",
        "a/../../b",
        "x\x00y",
        "\n",
        "C:\\x",
        "c:x",
        "",
        "a" * 300,
        "..\\x",
        "\\\\server\\share",
        "sub\\Phi-3",
        "tab\there",
        "del\x7f",
        "..",
    ],
)
async def test_invalid_names_are_rejected(library: ModelRegistry, name: str) -> None:
    with pytest.raises(InvalidModelName) as info:
        library.resolve(name)
    message = info.value.message
    assert not any(ord(c) < 32 or ord(c) == 127 for c in message)
    assert len(message) < 200


async def test_name_of_255_chars_is_valid_but_unknown(library: ModelRegistry) -> None:
    with pytest.raises(ModelNotFound) as info:
        library.resolve("b" * 255)
    assert "..." in info.value.message  # the echo of the input is truncated


# --- what counts as a model --------------------------------------------------------


async def test_symlink_outside_is_rejected(models: Path, tmp_path: Path) -> None:
    secret = put(tmp_path / "outside" / "secret.gguf")
    (models / "evil.gguf").symlink_to(secret)
    put(models / "real" / "target.gguf")
    (models / "alias.gguf").symlink_to(models / "real" / "target.gguf")
    reg = await scanned(models)

    assert ids(reg) == ["alias", "target"]
    assert reg.resolve("alias").path == (models / "real" / "target.gguf").resolve()
    assert reg.resolve("alias").relpath == "alias.gguf"
    for name in ("evil", "evil.gguf", "EVIL"):
        with pytest.raises(InvalidModelName, match="outside the models directory"):
            reg.resolve(name)
    with pytest.raises(ModelNotFound):
        reg.resolve("secret")


async def test_symlinked_dir_is_not_descended(models: Path, tmp_path: Path) -> None:
    put(tmp_path / "other" / "m.gguf")
    (models / "linked").symlink_to(tmp_path / "other", target_is_directory=True)
    put(models / "inside" / "n.gguf")
    (models / "loop").symlink_to(models, target_is_directory=True)
    reg = await scanned(models)
    assert ids(reg) == ["n"]


async def test_hidden_temp_empty_and_special_files_are_ignored(models: Path) -> None:
    put(models / ".staging" / "a.gguf")
    put(models / "sub" / ".hidden" / "b.gguf")
    put(models / ".c.gguf")
    put(models / "d.gguf.part")
    put(models / "e.gguf.incomplete")
    put(models / "f.rkllm.tmp")
    put(models / "g.gguf.download")
    put(models / "h.partial")
    put(models / "readme.txt")
    put(models / "empty.gguf", b"")
    (models / "dir.gguf").mkdir()
    os.mkfifo(models / "pipe.gguf")
    put(models / "ok.gguf")
    reg = await scanned(models)
    assert ids(reg) == ["ok"]


async def test_missing_dir_yields_nothing_then_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "not-yet"
    with caplog.at_level(logging.WARNING, logger="rkllmd.catalog.registry"):
        reg = await scanned(models)
    assert ids(reg) == []
    assert any("does not exist" in r.getMessage() for r in caplog.records)

    put(models / "late.gguf")
    await reg.scan()
    assert ids(reg) == ["late"]


async def test_entries_make_no_filesystem_calls(models: Path) -> None:
    put(models / "one.gguf")
    put(models / "two.rkllm")
    reg = await scanned(models)
    before = reg.entries()

    shutil.rmtree(models)
    assert reg.entries() == before
    assert reg.resolve("two").format == "rkllm"

    await reg.scan()  # deletions show up at the next scan
    assert ids(reg) == []


async def test_listeners_fire_only_on_change(models: Path) -> None:
    put(models / "one.gguf")
    reg = ModelRegistry(models)
    seen: list[list[str]] = []
    reg.add_listener(lambda: seen.append(ids(reg)))

    await reg.scan()
    await reg.scan()
    assert seen == [["one"]]
    put(models / "two.gguf")
    await reg.scan()
    (models / "one.gguf").unlink()
    await reg.scan()
    assert seen == [["one"], ["one", "two"], ["two"]]


# --- settling ----------------------------------------------------------------------


async def test_file_is_listed_only_once_stable(models: Path) -> None:
    reg = ModelRegistry(models, settle_seconds=0.3)
    path = put(models / "s.gguf", b"first", age=None)
    await reg.scan()
    assert ids(reg) == []  # one look at a fresh file is not enough

    with path.open("ab") as f:
        f.write(b"second")
    await reg.scan()
    assert ids(reg) == []  # it changed within the window

    # No further scans or events: the registry re-checks on its own once it is quiet.
    assert await until(lambda: ids(reg) == ["s"], NOTICE)
    assert reg.resolve("s").size_bytes == len(b"firstsecond")


async def test_old_mtime_is_listed_at_once(models: Path) -> None:
    put(models / "old.gguf", age=OLD)
    reg = await scanned(models, settle_seconds=0.3)
    assert ids(reg) == ["old"]


async def test_rewritten_file_is_withdrawn_until_stable(models: Path) -> None:
    path = put(models / "r.gguf", b"v1", age=OLD)
    reg = await scanned(models, settle_seconds=0.3)
    assert ids(reg) == ["r"]

    with path.open("ab") as f:
        f.write(b"more")
    await reg.scan()
    assert ids(reg) == []
    assert await until(lambda: ids(reg) == ["r"], NOTICE)
    assert reg.resolve("r").size_bytes == 6


# --- watching ----------------------------------------------------------------------

Start = Callable[..., Awaitable[ModelRegistry]]


@pytest.fixture
async def watch(models: Path) -> AsyncIterator[Start]:
    """Start `ModelRegistry.watch` on `models`; stopping must be prompt."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(path: Path = models, **kwargs: Any) -> ModelRegistry:
        reg = ModelRegistry(path, **kwargs)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(reg.watch(stop))))
        return reg

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 15.0)  # stops, not hangs (a scan may be under way)


async def live(reg: ModelRegistry) -> None:
    """Wait until the watcher demonstrably sees changes (a probe comes and goes)."""
    probe = put(reg.models_dir / "probe.gguf", age=None)
    assert await until(lambda: "probe" in ids(reg), NOTICE)
    probe.unlink()
    assert await until(lambda: "probe" not in ids(reg), NOTICE)


async def test_watch_sees_added_and_deleted_files(models: Path, watch: Start) -> None:
    put(models / "before.gguf")
    reg = await watch()
    await live(reg)
    assert ids(reg) == ["before"]

    put(models / "sub" / "new.gguf", b"GGUF" * 100, age=None)
    assert await until(lambda: "new" in ids(reg), NOTICE)

    (models / "before.gguf").unlink()
    assert await until(lambda: ids(reg) == ["new"], NOTICE)


async def test_watch_sees_moves_out_of_staging(models: Path, watch: Start) -> None:
    reg = await watch()
    await live(reg)
    staged = put(models / ".staging" / "m.gguf", b"data", age=None)
    part = put(models / "n.gguf.part", b"data", age=None)
    await asyncio.sleep(0.8)  # longer than settle + debounce: staged files stay unlisted
    assert ids(reg) == []

    staged.rename(models / "m.gguf")
    part.rename(models / "n.gguf")
    assert await until(lambda: ids(reg) == ["m", "n"], NOTICE)


async def test_growing_file_appears_only_when_done(models: Path, watch: Start) -> None:
    # A write every ~0.1 s keeps the file unsettled only while no pause between two
    # writes reaches the settle window: 3 s, not the default 0.5 s that one slow pass of
    # the loop below on a loaded machine could exceed.
    reg = await watch(settle_seconds=3.0)
    await live(reg)
    growing = True
    seen_while_growing: list[list[str]] = []

    def on_change() -> None:
        if growing:
            seen_while_growing.append(ids(reg))

    reg.add_listener(on_change)

    path = models / "big.gguf"
    with path.open("wb") as f:
        for _ in range(15):
            f.write(b"x" * 4096)
            f.flush()
            await asyncio.sleep(0.1)
            assert "big" not in ids(reg)
    growing = False

    assert await until(lambda: "big" in ids(reg), NOTICE)
    assert not any("big" in listed for listed in seen_while_growing)
    assert reg.resolve("big").size_bytes == 15 * 4096


async def test_watch_waits_for_missing_dir(tmp_path: Path, watch: Start) -> None:
    models = tmp_path / "later"
    reg = await watch(models)
    await asyncio.sleep(0.1)
    assert ids(reg) == []

    put(models / "first.gguf")
    assert await until(lambda: ids(reg) == ["first"], NOTICE)
    await live(reg)  # and once it exists, events flow


async def test_watch_survives_dir_removal(models: Path, watch: Start) -> None:
    put(models / "a.gguf")
    reg = await watch()
    await live(reg)
    shutil.rmtree(models)
    assert await until(lambda: ids(reg) == [], NOTICE)

    put(models / "b.gguf")
    assert await until(lambda: ids(reg) == ["b"], NOTICE)


async def test_watch_rescans_periodically(models: Path, watch: Start) -> None:
    # The model is a symlink into a hidden blob store: writes to the blob raise only
    # filtered events, so only the periodic rescan can notice the new size.
    blob = put(models / ".blobs" / "sha256-1", b"v1", age=OLD)
    (models / "m.gguf").symlink_to(blob)
    reg = await watch(rescan_interval=0.2)
    await live(reg)
    assert ids(reg) == ["m"]

    for size in (3, 4, 5):  # several rounds: one stray re-check cannot pass them all
        # Replaced whole, as a blob store does: the rescan runs in a thread while this
        # writes, and must never see the blob empty (not listed) or freshly modified (not
        # settled), else the model would drop out of the list until the next rescan.
        os.replace(put(models / ".blobs" / "next", b"v" * size, age=OLD), blob)
        assert await until(lambda: sizes(reg) == [size], NOTICE)  # noqa: B023
    assert reg.resolve("m").path == blob.resolve()


async def test_stop_before_start_returns(models: Path) -> None:
    reg = ModelRegistry(models)
    stop = asyncio.Event()
    stop.set()
    await asyncio.wait_for(reg.watch(stop), 5.0)
