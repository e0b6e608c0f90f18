"""The pull manifest and the durable-write helpers the model store relies on.

A pull publishes into ``<models>/<owner>/<name>/`` and records what it put there in
``<models>/<owner>/<name>/.rkllmd-pull.json``. The manifest is written twice: once
with the files about to be moved in listed as ``pending`` (before the first rename),
and once more, last, with ``pending`` empty. The registry never lists a model file
that is pending or that sits under a manifest it cannot read, so a crash anywhere in
between leaves nothing half-published on the list.

Everything here is blocking I/O: call it from a worker thread.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..safefs import Folder
from ..untrusted import load_json

MANIFEST_NAME = ".rkllmd-pull.json"
STAGING_DIR = ".staging"
VERSION = 1
MAX_JSON_BYTES = 1024 * 1024

_HEX = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class InvalidManifest(ValueError):
    """The manifest exists but cannot be trusted."""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- reading and writing JSON in an open folder --------------------------------------


def read_json(folder: Folder, name: str) -> Any:
    """A small JSON file of ``folder``: ValueError if too big, too deep or not JSON;
    OSError if missing or unreadable, a symlink, a FIFO or anything but a regular file."""
    return load_json(folder.read_bytes(name, MAX_JSON_BYTES))


def write_json(folder: Folder, name: str, data: Any) -> None:
    """Durably: a temporary file, fsynced, renamed over ``name``, the folder fsynced."""
    folder.write_atomic(name, json.dumps(data, indent=1, sort_keys=True).encode() + b"\n")


# --- the manifest ------------------------------------------------------------------


@dataclass(slots=True)
class FileRecord:
    size: int
    sha256: str | None = None  # LFS files
    blob_id: str | None = None  # git blob sha1 (small files)
    mtime_ns: int = 0  # as published: a match lets a later pull skip re-hashing

    @property
    def key(self) -> str | None:
        return self.sha256 or self.blob_id


@dataclass(slots=True)
class ModelRecord:
    files: list[str]  # technical files that came with this model file
    revision: str
    commit: str
    pulled_at: str


@dataclass(slots=True)
class Manifest:
    repo: str
    files: dict[str, FileRecord] = field(default_factory=dict)
    models: dict[str, ModelRecord] = field(default_factory=dict)
    pending: list[str] = field(default_factory=list)
    version: int = VERSION

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "repo": self.repo,
            "files": {p: _file_json(r) for p, r in sorted(self.files.items())},
            "models": {p: _model_json(r) for p, r in sorted(self.models.items())},
            "pending": sorted(self.pending),
        }

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        try:
            if data.get("version") != VERSION or not isinstance(data["repo"], str):
                raise InvalidManifest("unsupported manifest version")
            files = {_path(p): _file_record(r) for p, r in data["files"].items()}
            models = {_path(p): _model_record(r) for p, r in data["models"].items()}
            pending = [_path(p) for p in data["pending"]]
        except (AttributeError, KeyError, TypeError) as exc:
            raise InvalidManifest(f"malformed manifest: {exc!r}") from None
        return cls(data["repo"], files, models, pending)

    def referenced_by_others(self, model: str) -> set[str]:
        """Files (model or technical) that models other than ``model`` still need."""
        keep: set[str] = set()
        for path, record in self.models.items():
            if path != model:
                keep.add(path)
                keep.update(record.files)
        return keep


def _file_json(r: FileRecord) -> dict[str, Any]:
    return {"size": r.size, "sha256": r.sha256, "blob_id": r.blob_id, "mtime_ns": r.mtime_ns}


def _model_json(r: ModelRecord) -> dict[str, Any]:
    return {
        "files": sorted(r.files),
        "revision": r.revision,
        "commit": r.commit,
        "pulled_at": r.pulled_at,
    }


def _path(value: Any) -> str:
    if not isinstance(value, str) or not is_safe_relpath(value):
        raise InvalidManifest(f"unsafe path {value!r} in manifest")
    return value


def _hex_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _HEX.fullmatch(value):
        raise InvalidManifest("bad hash in manifest")
    return value


def _file_record(data: Any) -> FileRecord:
    size, mtime = data["size"], data.get("mtime_ns", 0)
    if not isinstance(size, int) or size < 0 or not isinstance(mtime, int):
        raise InvalidManifest("bad size in manifest")
    sha256, blob_id = _hex_or_none(data.get("sha256")), _hex_or_none(data.get("blob_id"))
    return FileRecord(size, sha256, blob_id, mtime)


def _model_record(data: Any) -> ModelRecord:
    files = [_path(p) for p in data["files"]]
    values = (data["revision"], data["commit"], data["pulled_at"])
    if not all(isinstance(v, str) for v in values):
        raise InvalidManifest("bad model record in manifest")
    return ModelRecord(files, *values)


def is_safe_relpath(path: str) -> bool:
    """A relative POSIX path that stays below its base: no '..', '.', '', '\\', NUL."""
    if not path or path.startswith("/") or "\\" in path or len(path) > 1024:
        return False
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return False
    if len(path) >= 2 and path[1] == ":":  # drive-relative (C:x)
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def read_manifest(repo_dir: Folder) -> Manifest | None:
    """The manifest of a pulled repo folder, None when there is none.

    Raises InvalidManifest when it exists but cannot be read or parsed."""
    try:
        data = read_json(repo_dir, MANIFEST_NAME)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InvalidManifest(f"cannot read manifest: {exc}") from None
    return Manifest.from_json(data)


def write_manifest(repo_dir: Folder, manifest: Manifest) -> None:
    write_json(repo_dir, MANIFEST_NAME, manifest.to_json())


def repo_dir_of(relpath: str) -> str | None:
    """``owner/name`` for a model published by a pull (``owner/name/...file``)."""
    parts = relpath.split("/")
    return f"{parts[0]}/{parts[1]}" if len(parts) >= 3 else None
