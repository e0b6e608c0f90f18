"""Unit tests of the model store's pieces: selection, manifest, metadata, staging
cleanup, token file, removal path checks, and the registry's view of pulls."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from rkllmd.catalog import manifest as manifests
from rkllmd.catalog.manifest import Manifest, ModelRecord, is_safe_relpath
from rkllmd.catalog.registry import ModelRegistry
from rkllmd.config import HubSection
from rkllmd.errors import AmbiguousModel, ChooseModelFile, HubUnauthorized, InvalidModelName
from rkllmd.safefs import Folder
from rkllmd.store.hub import Listing, RepoFile, check_repo_id, read_token
from rkllmd.store.removal import remove_model
from rkllmd.store.selection import select
from rkllmd.store.staging import cleanup_staging

TECH = ("config.json", "tokenizer.json")


def listing(*paths: str) -> Listing:
    files = tuple(RepoFile(p, 10, None, "0" * 40) for p in paths)
    return Listing("o/r", "main", "a" * 40, files)


def write_manifest(repo_dir: Path, manifest: Manifest) -> None:
    with Folder.open(repo_dir) as folder:
        manifests.write_manifest(folder, manifest)


def paths(files: tuple[RepoFile, ...]) -> list[str]:
    return sorted(f.path for f in files)


# --- selection ----------------------------------------------------------------------


def test_selection_takes_technical_files_of_root_and_model_folder() -> None:
    repo = listing("q/m.rkllm", "config.json", "q/config.json", "other/config.json", "q/x.md")
    chosen = select(repo, file=None, include=(), exclude=(), technical=TECH)
    assert paths(chosen.models) == ["q/m.rkllm"]
    assert paths(chosen.extras) == ["config.json", "q/config.json"]
    assert chosen.files[-1].path == "q/m.rkllm"  # model files are published last


def test_selection_choice_by_name_include_and_exclude() -> None:
    repo = listing("a/m.gguf", "b/m.gguf", "c.gguf", "README.md")
    with pytest.raises(ChooseModelFile) as err:
        select(repo, file=None, include=(), exclude=(), technical=TECH)
    assert len(err.value.details["candidates"]) == 3
    with pytest.raises(ChooseModelFile):  # the name is not unique: the full path is needed
        select(repo, file="m.gguf", include=(), exclude=(), technical=TECH)
    assert paths(select(repo, file="b/m.gguf", include=(), exclude=(), technical=TECH).models)
    picked = select(repo, file=None, include=("*.gguf", "*.md"), exclude=("a/",), technical=TECH)
    assert paths(picked.models) == ["b/m.gguf", "c.gguf"] and paths(picked.extras) == ["README.md"]


@pytest.mark.parametrize("repo", ["owner/name", "o/Qwen2.5-0.5B-Instruct-rk3588-1.1.4", "a_b/c.d"])
def test_good_repo_ids(repo: str) -> None:
    assert check_repo_id(repo) == repo


@pytest.mark.parametrize(
    "path", ["", ".", "..", "../x", "a/../b", "/x", "C:x", "C:\\x", "a\\b", "a//b", "a/", "x\0"]
)
def test_unsafe_relative_paths(path: str) -> None:
    assert not is_safe_relpath(path)


# --- manifest and registry ----------------------------------------------------------


def _model(folder: Path, name: str = "m.gguf") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"GGUF" + b"\0" * 64)
    old = time.time() - 60
    os.utime(path, (old, old))
    return path


async def _ids(models: Path) -> list[str]:
    reg = ModelRegistry(models, settle_seconds=0.05)
    await reg.scan()
    return [e.id for e in reg.entries()]


async def test_registry_hides_pending_and_unreadable_manifests(tmp_path: Path) -> None:
    repo_dir = tmp_path / "o" / "r"
    _model(repo_dir)
    manifest = Manifest("o/r", pending=["m.gguf"])
    write_manifest(repo_dir, manifest)
    assert await _ids(tmp_path) == []  # a publish in progress (or cut short)
    manifest.pending = []
    write_manifest(repo_dir, manifest)
    assert await _ids(tmp_path) == ["m"]
    (repo_dir / ".rkllmd-pull.json").write_text("{not json")
    assert await _ids(tmp_path) == []
    (repo_dir / ".rkllmd-pull.json").write_text(
        json.dumps(
            {
                "version": 1,
                "repo": "o/r",
                "files": {"../../etc/passwd": {"size": 1}},
                "models": {},
                "pending": [],
            }
        )
    )
    assert await _ids(tmp_path) == []


async def test_metadata_precedence(tmp_path: Path) -> None:
    repo_dir = tmp_path / "o" / "r"
    _model(repo_dir)
    write_manifest(
        repo_dir,
        Manifest(
            "o/r", models={"m.gguf": ModelRecord([], "main", "c" * 40, "2024-01-01T00:00:00Z")}
        ),
    )
    (repo_dir / "config.json").write_text(
        '{"architectures": ["BertModel"], "model_type": "bert", "max_position_embeddings": 512}'
    )
    (repo_dir / "meta.json").write_text('{"name": "Hub name", "context_length": 1024}')
    reg = ModelRegistry(tmp_path, settle_seconds=0.05)
    await reg.scan()
    meta = reg.entries()[0].meta
    assert (meta.name, meta.type, meta.context_length) == ("Hub name", "embedding", 1024)
    assert meta.source is not None and meta.source.commit == "c" * 40 and meta.aliases == ()

    (repo_dir / "m.rkllmd.json").write_text(
        '{"name": "Mine", "type": "chat", "aliases": ["x", "bad/alias", "..", 5]}'
    )
    await reg.scan()
    meta = reg.entries()[0].meta
    assert (meta.name, meta.type, meta.context_length) == ("Mine", "chat", 1024)
    assert meta.aliases == ("x",) and reg.resolve("X").id == "m"

    (repo_dir / "m.rkllmd.json").write_text("[broken")
    await reg.scan()
    assert reg.entries()[0].meta.name == "Hub name"  # a bad sidecar is ignored


async def test_flat_models_dir_ignores_hub_files_and_ambiguous_aliases(tmp_path: Path) -> None:
    _model(tmp_path, "a.gguf")
    _model(tmp_path, "b.gguf")
    (tmp_path / "config.json").write_text('{"max_position_embeddings": 4096}')
    (tmp_path / "a.rkllmd.json").write_text('{"aliases": ["same", "b"]}')
    (tmp_path / "b.rkllmd.json").write_text('{"aliases": ["same"]}')
    reg = ModelRegistry(tmp_path, settle_seconds=0.05)
    await reg.scan()
    assert [e.meta.context_length for e in reg.entries()] == [None, None]
    assert reg.resolve("b").id == "b"  # an id beats another model's alias
    with pytest.raises(AmbiguousModel):
        reg.resolve("same")


# --- staging cleanup and the token file ---------------------------------------------


def test_cleanup_keeps_recent_resumable_parts_only(tmp_path: Path) -> None:
    staging = tmp_path / ".staging"
    keep, old, junk = staging / "a", staging / "b", staging / "c"
    for folder in (keep, old, junk):
        folder.mkdir(parents=True)
    job = {"repo": "o/r", "files": [{"path": "m.gguf", "size": 9, "key": "k1"}]}
    for folder in (keep, old):
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "k1.part").write_bytes(b"123")
        (folder / "other.part").write_bytes(b"4")
    ancient = time.time() - 3 * 86400
    os.utime(old / "job.json", (ancient, ancient))
    (junk / "x.part").write_bytes(b"5")

    kept = cleanup_staging(tmp_path, keep_seconds=86400)
    assert [j["repo"] for j in kept] == ["o/r"]
    assert sorted(p.name for p in staging.rglob("*")) == ["a", "job.json", "k1.part"]


def test_staging_symlink_is_removed_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("x")
    models = tmp_path / "models"
    models.mkdir()
    (models / ".staging").symlink_to(victim)
    cleanup_staging(models, keep_seconds=0)
    assert (victim / "precious").exists() and not (models / ".staging").exists()


def test_token_file_must_be_private(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("hf_abc\n")
    token.chmod(0o600)
    assert read_token(HubSection(token_file=token)) == "hf_abc"
    token.chmod(0o640)
    with pytest.raises(HubUnauthorized):
        read_token(HubSection(token_file=token))
    assert read_token(HubSection(token="hf_inline", token_file=token)) == "hf_inline"
    assert read_token(HubSection()) is None


# --- removal checks -----------------------------------------------------------------


def test_removal_refuses_paths_through_symlinked_folders(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _model(outside)
    models = tmp_path / "models"
    models.mkdir()
    (models / "link").symlink_to(outside)
    for rel in ("link/m.gguf", "../outside/m.gguf", "/etc/passwd", ".staging/x"):
        with pytest.raises(InvalidModelName):
            remove_model(models, rel)
    assert (outside / "m.gguf").exists()
