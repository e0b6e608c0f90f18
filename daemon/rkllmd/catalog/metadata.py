"""Per-model metadata: display name, description, type, context length, aliases, source.

Sources:
1. the pull manifest (``<owner>/<name>/.rkllmd-pull.json``): source repo, revision,
   commit, download time, total size of the model and its technical files;
2. the Hub's ``config.json`` in the model's folder (context length, type), never for
   files lying directly in the models directory;
3. the Hub's ``meta.json`` in the same folder (name, description, type, context length);
4. the user's sidecar ``<model file stem>.rkllmd.json`` next to the model file, the only
   source of ``aliases`` and ``sampling`` defaults;
5. the GGUF header (name, architecture, context length, size label, quantisation) and
   an ``.rkllm`` file name (platform, data type, context).
Which source wins for which card field is ``describe.py``'s business.

Runs in the registry's scan thread: blocking reads, small files only, per-scan caches;
GGUF headers are cached across scans by file signature (``gguf.HeaderCache``).
"""

from __future__ import annotations

import errno
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..safefs import Folder
from .describe import NOTHING, Declared, card
from .gguf import HeaderCache
from .manifest import (
    InvalidManifest,
    Manifest,
    read_json,
    read_manifest,
    repo_dir_of,
)

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".rkllmd.json"
MODEL_TYPES = ("chat", "embedding", "image", "speech", "draft")
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
    # The card fields, each from its most trusted source (see describe.py); a model
    # the scan has not described (NO_META) has none.
    name: str | None = None
    description: str | None = None
    type: str | None = None
    context_length: int | None = None
    aliases: tuple[str, ...] = ()
    sampling: tuple[tuple[str, float], ...] = ()
    source: Source | None = None
    # Facts from the file itself: the GGUF header, an .rkllm file name.
    architecture: str | None = None
    parameters: str | None = None  # a size label: "135M", "0.5B"
    quantization: str | None = None  # "Q4_1", "W8A8"
    platform: str | None = None  # the NPU an .rkllm file was converted for
    # Trained with Matryoshka representation learning: a prefix of an embedding is an
    # embedding (OpenAI ``dimensions``). ``"matryoshka": true`` or a non-empty
    # ``"matryoshka_dimensions"`` list in meta.json or the sidecar says so.
    matryoshka: bool = False


NO_META = ModelMeta()


@dataclass(slots=True)
class _Scan:
    """Caches for one registry walk. Every file is read through the models root's
    descriptor, no component followed if it is a link (see safefs.py)."""

    root: Folder
    # Problems already logged, owned by the registry across scans: one line per file.
    warned: set[str]
    headers: HeaderCache
    manifests: dict[str, Manifest | None] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    json_files: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def manifest(self, repo_rel: str) -> Manifest | None:
        if repo_rel not in self.manifests and repo_rel not in self.invalid:
            try:
                self.manifests[repo_rel] = self._read_manifest(repo_rel)
            except InvalidManifest as exc:
                self.invalid.add(repo_rel)
                self.warn_once(f"manifest:{repo_rel}", "ignoring models in %r: %s", repo_rel, exc)
        return self.manifests.get(repo_rel)

    def _read_manifest(self, repo_rel: str) -> Manifest | None:
        try:
            folder = self.root.walk(repo_rel)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a link on the way, or the folder is unreadable
            raise InvalidManifest(f"cannot open its folder ({exc.strerror})") from None
        with folder:
            return read_manifest(folder)

    def json_object(self, rel: str) -> dict[str, Any] | None:
        if rel not in self.json_files:
            self.json_files[rel] = self._read_object(rel)
        return self.json_files[rel]

    def warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message, *args)

    def _read_object(self, rel: str) -> dict[str, Any] | None:
        folder_rel, _, name = rel.rpartition("/")
        try:
            with self.root.walk(folder_rel) as folder:
                data = read_json(folder, name)
        except FileNotFoundError:
            return None
        except OSError as exc:  # a symlink, a FIFO, unreadable: never followed or waited on
            self.warn_once(f"json:{rel}", "ignoring metadata file %r: %s", rel, _reason(exc))
            return None
        except ValueError as exc:  # too big, too deep, not JSON
            self.warn_once(f"json:{rel}", "ignoring metadata file %r: %s", rel, exc)
            return None
        if not isinstance(data, dict):
            self.warn_once(f"json:{rel}", "ignoring metadata file %r: not a JSON object", rel)
            return None
        return data


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link"
    return exc.strerror or "unreadable"


# A model file as the walk saw it: relpath -> (real path, size, mtime in ns).
FileSig = tuple[str, int, int]


def collect(
    root: Path, files: dict[str, FileSig], warned: set[str], headers: HeaderCache
) -> tuple[set[str], dict[str, ModelMeta]]:
    """Model files to hide (pending or under a bad manifest) and the metadata of the rest.

    ``warned``: the caller's record of problems already logged (updated here);
    ``headers``: the caller's GGUF header cache (pruned here to the files seen)."""
    with Folder.open(root) as folder:
        return _collect(_Scan(folder, warned, headers), files)


def _collect(scan: _Scan, files: dict[str, FileSig]) -> tuple[set[str], dict[str, ModelMeta]]:
    hidden: set[str] = set()
    metas: dict[str, ModelMeta] = {}
    for rel, sig in files.items():
        if _is_unpublished(scan, rel):
            hidden.add(rel)
            continue
        metas[rel] = _meta_for(scan, rel, sig)
    scan.headers.retain(set(files.values()))
    return hidden, metas


def _is_unpublished(scan: _Scan, rel: str) -> bool:
    repo_rel = repo_dir_of(rel)
    if repo_rel is None:
        return False
    manifest = scan.manifest(repo_rel)
    if repo_rel in scan.invalid:
        return True
    return manifest is not None and rel[len(repo_rel) + 1 :] in manifest.pending


def _meta_for(scan: _Scan, rel: str, sig: FileSig) -> ModelMeta:
    folder = rel.rsplit("/", 1)[0] if "/" in rel else None
    config = hub = NOTHING
    hub_data: dict[str, Any] = {}
    if folder is not None:  # Hub files never apply to the flat models directory
        config = _from_config(scan.json_object(f"{folder}/config.json"))
        hub_data = scan.json_object(f"{folder}/meta.json") or {}
        hub = _declared(hub_data)
    stem = rel.rsplit(".", 1)[0]
    sidecar = f"{stem}{SIDECAR_SUFFIX}"
    # A sidecar a pull brought is no sidecar: a Hub repo must never name models.
    sidecar_data = {} if _was_pulled(scan, sidecar) else scan.json_object(sidecar) or {}
    is_gguf = rel.lower().endswith(".gguf")
    described = card(
        stem.rsplit("/", 1)[-1],
        "gguf" if is_gguf else "rkllm",
        sig[1],
        sidecar=_declared(sidecar_data),
        hub=hub,
        config=config,
        gguf=scan.headers.facts(*sig) if is_gguf else None,
    )
    return ModelMeta(
        name=described.name,
        description=described.description,
        type=described.type,
        context_length=described.context_length,
        aliases=_aliases(sidecar_data.get("aliases")),
        sampling=_sampling(sidecar_data.get("sampling")),
        source=_from_manifest(scan, rel),
        architecture=described.architecture,
        parameters=described.parameters,
        quantization=described.quantization,
        platform=described.platform,
        matryoshka=_matryoshka(sidecar_data) or _matryoshka(hub_data),
    )


def _was_pulled(scan: _Scan, rel: str) -> bool:
    """A file a pull put there (listed in its repo's manifest)."""
    repo_rel = repo_dir_of(rel)
    manifest = scan.manifest(repo_rel) if repo_rel else None
    return manifest is not None and rel[len(str(repo_rel)) + 1 :] in manifest.files


def _from_manifest(scan: _Scan, rel: str) -> Source | None:
    repo_rel = repo_dir_of(rel)
    manifest = scan.manifest(repo_rel) if repo_rel else None
    if manifest is None or repo_rel is None:
        return None
    inner = rel[len(repo_rel) + 1 :]
    record = manifest.models.get(inner)
    if record is None:
        return None
    sizes = [manifest.files[p].size for p in (inner, *record.files) if p in manifest.files]
    return Source(manifest.repo, record.revision, record.commit, record.pulled_at, sum(sizes))


def _from_config(data: dict[str, Any] | None) -> Declared:
    if not data:
        return NOTHING
    nested = data.get("text_config") if isinstance(data.get("text_config"), dict) else {}
    context = _context_length(data) or _context_length(nested or {})
    return Declared(type=_infer_type(data), context_length=context)


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


def _declared(data: dict[str, Any] | None) -> Declared:
    if not data:
        return NOTHING
    kind = data.get("type")
    return Declared(
        name=_text(data.get("name")),
        description=_text(data.get("description")),
        type=kind if kind in MODEL_TYPES else None,
        context_length=_context_length(data),
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


def _matryoshka(data: dict[str, Any]) -> bool:
    sizes = data.get("matryoshka_dimensions")
    listed = (
        isinstance(sizes, list)
        and bool(sizes)
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes)
    )
    return data.get("matryoshka") is True or listed
