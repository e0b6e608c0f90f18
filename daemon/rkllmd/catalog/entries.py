"""Model entries, and the published set's lookup tables: how a name finds its model.

A ``Snapshot`` is built in the scan lane from one walk and replaced whole, never
mutated, so ``resolve`` reads it from the event loop without locks or I/O.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from ..errors import AmbiguousModel, InvalidModelName, ModelNotFound
from .metadata import NO_META, ModelMeta
from .scan import CONTROL, DRIVE, Seen

MAX_NAME_LENGTH = 255
_IDS_IN_MESSAGE = 20
_WORD_BREAKS = "-_./ "
IDS_IN_DETAILS = 100  # a 404 never carries 100,000 ids (1 MB) in its body


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One published model file."""

    id: str
    path: Path
    relpath: str
    format: Literal["gguf", "rkllm"]
    size_bytes: int
    mtime: float
    meta: ModelMeta = NO_META  # see metadata.py: sidecar, Hub files, pull manifest
    root: Path | None = None  # the models dir it was listed in (the worker opens it below)

    @property
    def modified(self) -> str:
        """The file's modification time, ISO 8601 in UTC to the second."""
        moment = datetime.fromtimestamp(self.mtime, UTC).isoformat(timespec="seconds")
        return moment.replace("+00:00", "Z")


def _strip_ext(name: str) -> str:
    return name.rsplit(".", 1)[0]


def build_entries(
    files: Iterable[Seen],
    metas: dict[str, ModelMeta] | None = None,
    previous: dict[str, ModelEntry] | None = None,
    root: Path | None = None,
) -> tuple[ModelEntry, ...]:
    """The entries of a walk; an unchanged file keeps its entry object from
    ``previous`` (by relpath): with 100,000 files, rebuilding them all on every scan
    fed the garbage collector full collections that held the GIL for seconds."""
    metas = metas or {}
    previous = previous or {}
    files = list(files)
    stems = Counter(_strip_ext(f.relpath.rsplit("/", 1)[-1]) for f in files)
    ids = {}
    for f in files:
        stem = _strip_ext(f.relpath.rsplit("/", 1)[-1])
        ids[f.relpath] = stem if stems[stem] == 1 else _strip_ext(f.relpath)
    # `d/x.gguf` next to `d/x.rkllm`: without the extension the two would still clash
    clashes = Counter(ids.values())
    entries = []
    for f in files:
        model_id = ids[f.relpath] if clashes[ids[f.relpath]] == 1 else f.relpath
        meta = metas.get(f.relpath, NO_META)
        old = previous.get(f.relpath)
        if old is not None and _same(old, f, model_id, meta):
            entries.append(old)
            continue
        entries.append(
            ModelEntry(
                id=model_id,
                path=Path(f.realpath),
                relpath=f.relpath,
                format="gguf" if f.relpath.lower().endswith(".gguf") else "rkllm",
                size_bytes=f.size,
                mtime=f.mtime,
                meta=meta,
                root=root,
            )
        )
    return tuple(sorted(entries, key=lambda e: (e.id, e.relpath)))


def _same(entry: ModelEntry, f: Seen, model_id: str, meta: ModelMeta) -> bool:
    return (
        entry.id == model_id
        and entry.size_bytes == f.size
        and entry.mtime == f.mtime
        and entry.meta == meta
        and str(entry.path) == f.realpath
    )


Found = ModelEntry | tuple[ModelEntry, ...]  # one entry, or several under one key


def _add(table: dict[str, Found], key: str, entry: ModelEntry) -> None:
    """No list per key: most keys name one model, and lists are objects the garbage
    collector must visit (three per model, 300,000 of them for 100,000 files)."""
    old = table.get(key)
    if old is None:
        table[key] = entry
    elif isinstance(old, tuple):
        table[key] = (*old, entry)
    else:
        table[key] = (old, entry)


def _all(table: dict[str, Found], key: str) -> list[ModelEntry]:
    found = table.get(key)
    if found is None:
        return []
    return list(found) if isinstance(found, tuple) else [found]


class Snapshot:
    """One published set with its lookup tables; replaced whole, never mutated."""

    def __init__(self, entries: tuple[ModelEntry, ...]) -> None:
        self.entries = entries
        self.by_id = {e.id: e for e in entries}
        self.by_relpath = {e.relpath: e for e in entries}
        self.by_path: dict[str, ModelEntry] = {}  # relpath with and without extension
        self.by_file: dict[str, Found] = {}  # file name, with and without extension
        self.by_fold: dict[str, Found] = {}  # casefolded id
        self.by_alias: dict[str, Found] = {}  # casefolded alias from metadata
        for e in entries:
            for alias in e.meta.aliases:
                _add(self.by_alias, alias.casefold(), e)
            name = e.relpath.rsplit("/", 1)[-1]
            _add(self.by_file, name, e)
            if _strip_ext(name) != name:
                _add(self.by_file, _strip_ext(name), e)
            _add(self.by_fold, e.id.casefold(), e)
            self.by_path.setdefault(_strip_ext(e.relpath), e)
            self.by_path[e.relpath] = e
        folded = sorted((e.id.casefold(), e.id) for e in entries)  # for prefix search
        self.fold_keys = [k for k, _ in folded]
        self.fold_entries = [self.by_id[i] for _, i in folded]

    def word_prefixed(self, prefix: str) -> list[ModelEntry]:
        """Ids with a word (after ``-``, ``_``, ``.``, ``/``) starting with ``prefix``:
        ``gemma-3-270m`` finds ``google_gemma-3-270m-w8a8-...-rk3588``. A linear scan,
        reached only when every cheaper way found nothing."""
        found = []
        for key, entry in zip(self.fold_keys, self.fold_entries, strict=True):
            at = key.find(prefix, 1)
            while at > 0 and key[at - 1] not in _WORD_BREAKS:
                at = key.find(prefix, at + 1)
            if at > 0:
                found.append(entry)
        return found

    def prefixed(self, prefix: str) -> list[ModelEntry]:
        i = bisect.bisect_left(self.fold_keys, prefix)
        found = []
        while i < len(self.fold_keys) and self.fold_keys[i].startswith(prefix):
            found.append(self.fold_entries[i])
            i += 1
        return found


def rejected_keys(relpaths: Iterable[str]) -> frozenset[str]:
    keys: set[str] = set()
    for rel in relpaths:
        name = rel.rsplit("/", 1)[-1]
        keys.update(k.casefold() for k in (rel, _strip_ext(rel), name, _strip_ext(name)))
    return frozenset(keys)


# --- name validation and error messages --------------------------------------------


def _show(name: str) -> str:
    """The user's input, safe to embed in a message."""
    return repr(name[:80]) + ("..." if len(name) > 80 else "")


def _id_list(ids: list[str], count: int | None = None) -> str:
    if not ids:
        return "no models are available"
    more = (len(ids) if count is None else count) - _IDS_IN_MESSAGE
    return ", ".join(ids[:_IDS_IN_MESSAGE]) + (f", ... ({more} more)" if more > 0 else "")


def _validate(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidModelName("model name must be a non-empty string")
    problem = None
    if len(name) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} characters"
    elif CONTROL.search(name):
        problem = "contains control characters"
    elif name.startswith(("/", "\\")) or DRIVE.match(name):
        problem = "must not be an absolute path"
    elif ".." in re.split(r"[/\\]", name):
        problem = "must not contain '..'"
    elif "." in re.split(r"[/\\]", name):
        problem = "must not contain '.' path components"
    elif "\\" in name:
        problem = "must not contain backslashes"
    if problem:
        raise InvalidModelName(f"model name {_show(name)} {problem}")


def _pick(name: str, matches: list[ModelEntry], snap: Snapshot) -> ModelEntry:
    ids = sorted({e.id for e in matches})
    if len(matches) == 1:
        return matches[0]
    if matches:
        msg = f"model name {_show(name)} is ambiguous; candidates: {_id_list(ids)}"
        raise AmbiguousModel(msg, candidates=ids)
    available = [e.id for e in snap.entries[: IDS_IN_DETAILS + _IDS_IN_MESSAGE]]
    count = len(snap.entries)
    msg = f"model {_show(name)} not found; available: {_id_list(available, count)}"
    raise ModelNotFound(msg, available=available[:IDS_IN_DETAILS], available_count=count)


def resolve(snap: Snapshot, rejected: frozenset[str], name: str) -> ModelEntry:
    """The entry ``name`` means: an id or relative path exactly, else the first of file
    name, alias, id in any case, id prefix, word prefix that matches anything."""
    _validate(name)
    folded = name.casefold()
    if folded in rejected:
        msg = f"model {_show(name)} refers to a file outside the models directory"
        raise InvalidModelName(msg)
    found = snap.by_id.get(name) or snap.by_path.get(name)
    if found is not None:
        return found
    matches = (
        _all(snap.by_file, name)
        or _all(snap.by_alias, folded)
        or _all(snap.by_fold, folded)
        or snap.prefixed(folded)
        or snap.word_prefixed(folded)
    )
    return _pick(name, matches, snap)
