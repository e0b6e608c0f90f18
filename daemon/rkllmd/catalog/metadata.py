"""Per-model metadata: display name, description, type, context length, aliases, source.

Sources, later ones winning field by field:
1. the pull manifest (``<owner>/<name>/.rkllmd-pull.json``): source repo, revision,
   commit, download time, total size of the model and its technical files;
2. the Hub's ``config.json`` in the model's folder (context length, type), never for
   files lying directly in the models directory;
3. the Hub's ``meta.json`` in the same folder (name, description, type, context length);
4. the user's sidecar ``<model file stem>.rkllmd.json`` next to the model file, the only
   source of ``aliases`` and ``sampling`` defaults.

Runs in the registry's scan thread: blocking reads, small files only, per-scan caches.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .manifest import (
    InvalidManifest,
    Manifest,
    read_json,
    read_manifest,
    repo_dir_of,
)

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".rkllmd.json"
MODEL_TYPES = ("chat", "embedding", "image", "speech")
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "max_tokens")
_MAX_TEXT = 4096
_ALIAS = re.compile(r"[^\x00-\x1f\x7f/\\]{1,255}")
_CONTEXT_KEYS = (
    "context_length",
    "max_context_len",
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "max_sequence_length",
    "seq_length",
    "n_ctx",
)
_EMBEDDING_TYPES = ("bert", "xlm-roberta", "nomic_bert", "roberta", "mpnet", "e5", "gte")


@dataclass(frozen=True, slots=True)
class Source:
    repo: str
    revision: str
    commit: str
    pulled_at: str
    total_bytes: int  # the model file and the technical files that came with it


@dataclass(frozen=True, slots=True)
class ModelMeta:
    name: str | None = None
    description: str | None = None
    type: str | None = None
    context_length: int | None = None
    aliases: tuple[str, ...] = ()
    sampling: tuple[tuple[str, float], ...] = ()
    source: Source | None = None


NO_META = ModelMeta()


@dataclass(slots=True)
class _Scan:
    """Caches for one registry walk."""

    root: Path
    # Problems already logged, owned by the registry across scans: one line per file.
    warned: set[str]
    manifests: dict[str, Manifest | None] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    json_files: dict[Path, dict[str, Any] | None] = field(default_factory=dict)

    def manifest(self, repo_rel: str) -> Manifest | None:
        if repo_rel not in self.manifests and repo_rel not in self.invalid:
            try:
                self.manifests[repo_rel] = read_manifest(self.root / repo_rel)
            except InvalidManifest as exc:
                self.invalid.add(repo_rel)
                self.warn_once(f"manifest:{repo_rel}", "ignoring models in %r: %s", repo_rel, exc)
        return self.manifests.get(repo_rel)

    def json_object(self, path: Path) -> dict[str, Any] | None:
        if path not in self.json_files:
            self.json_files[path] = self._read_object(path)
        return self.json_files[path]

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message, *args)

    def _read_object(self, path: Path) -> dict[str, Any] | None:
        try:
            data = read_json(path)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            self.warn_once(f"json:{path}", "ignoring metadata file %s: %s", path.name, exc)
            return None
        if not isinstance(data, dict):
            self.warn_once(
                f"json:{path}", "ignoring metadata file %s: not a JSON object", path.name
            )
            return None
        return data


def collect(
    root: Path, relpaths: Iterable[str], warned: set[str]
) -> tuple[set[str], dict[str, ModelMeta]]:
    """Model files to hide (pending or under a bad manifest) and the metadata of the rest.

    ``warned``: the caller's record of problems already logged (updated here)."""
    scan = _Scan(root, warned)
    hidden: set[str] = set()
    metas: dict[str, ModelMeta] = {}
    for rel in relpaths:
        if _is_unpublished(scan, rel):
            hidden.add(rel)
            continue
        meta = _meta_for(scan, rel)
        if meta != NO_META:
            metas[rel] = meta
    return hidden, metas


def _is_unpublished(scan: _Scan, rel: str) -> bool:
    repo_rel = repo_dir_of(rel)
    if repo_rel is None:
        return False
    manifest = scan.manifest(repo_rel)
    if repo_rel in scan.invalid:
        return True
    return manifest is not None and rel[len(repo_rel) + 1 :] in manifest.pending


def _meta_for(scan: _Scan, rel: str) -> ModelMeta:
    meta = _from_manifest(scan, rel)
    folder = rel.rsplit("/", 1)[0] if "/" in rel else None
    if folder is not None:  # Hub files never apply to the flat models directory
        meta = _merge(meta, _from_config(scan.json_object(scan.root / folder / "config.json")))
        meta = _merge(meta, _from_fields(scan.json_object(scan.root / folder / "meta.json")))
    stem = rel.rsplit(".", 1)[0]
    sidecar = scan.json_object(scan.root / f"{stem}{SIDECAR_SUFFIX}")
    meta = _merge(meta, _from_fields(sidecar, user=True))
    return meta


def _merge(base: ModelMeta, top: ModelMeta) -> ModelMeta:
    changes = {
        name: getattr(top, name)
        for name in ("name", "description", "type", "context_length", "aliases", "sampling")
        if getattr(top, name) not in (None, ())
    }
    return replace(base, **changes) if changes else base


def _from_manifest(scan: _Scan, rel: str) -> ModelMeta:
    repo_rel = repo_dir_of(rel)
    manifest = scan.manifest(repo_rel) if repo_rel else None
    if manifest is None or repo_rel is None:
        return NO_META
    inner = rel[len(repo_rel) + 1 :]
    record = manifest.models.get(inner)
    if record is None:
        return NO_META
    sizes = [manifest.files[p].size for p in (inner, *record.files) if p in manifest.files]
    source = Source(manifest.repo, record.revision, record.commit, record.pulled_at, sum(sizes))
    return ModelMeta(source=source)


def _from_config(data: dict[str, Any] | None) -> ModelMeta:
    if not data:
        return NO_META
    nested = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}
    context = _context_length(data) or _context_length(nested or {})
    return ModelMeta(type=_infer_type(data), context_length=context)


def _infer_type(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures")
    names = [a for a in archs if isinstance(a, str)] if isinstance(archs, list) else []
    model_type = config.get("model_type")
    model_type = model_type.lower() if isinstance(model_type, str) else ""
    if "whisper" in model_type:
        return "speech"
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in names):
        return "chat"
    if model_type in _EMBEDDING_TYPES or any("Embedding" in a for a in names):
        return "embedding"
    return None


def _context_length(data: dict[str, Any]) -> int | None:
    for key in _CONTEXT_KEYS:
        value = data.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 1 << 24:
            return value
    return None


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value.strip()[:_MAX_TEXT] or None


def _from_fields(data: dict[str, Any] | None, *, user: bool = False) -> ModelMeta:
    if not data:
        return NO_META
    kind = data.get("type")
    return ModelMeta(
        name=_text(data.get("name")),
        description=_text(data.get("description")),
        type=kind if kind in MODEL_TYPES else None,
        context_length=_context_length(data),
        aliases=_aliases(data.get("aliases")) if user else (),
        sampling=_sampling(data.get("sampling")) if user else (),
    )


def _aliases(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return ()
    seen: dict[str, None] = {}
    for alias in value:
        if isinstance(alias, str) and _ALIAS.fullmatch(alias) and alias not in (".", ".."):
            seen.setdefault(alias, None)
    return tuple(seen)


def _sampling(value: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple(
        (key, value[key])
        for key in SAMPLING_KEYS
        if isinstance(value.get(key), int | float) and not isinstance(value.get(key), bool)
    )
