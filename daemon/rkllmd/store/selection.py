"""Which files of a Hub repo a pull fetches.

- Model files are the ``.gguf`` / ``.rkllm`` files of the listing.
- ``file`` names one of them (its path in the repo, or a file name that is unique).
- Without ``file``, ``include`` globs select model files (several allowed) and extra
  files; without either, a repo with exactly one model file pulls it, and a repo with
  several asks the caller to choose (``ChooseModelFile`` lists the candidates).
- The technical files (``config.json``, ``tokenizer.json``, ...) of the repo root and
  of each chosen model's folder come along; ``exclude`` globs drop anything.

Globs use ``fnmatch`` and are tried on the path and on the file name; a glob ending
in ``/`` matches a folder.

A repo never supplies the daemon's own files: a user sidecar (``*.rkllmd.json``: it
could name models through aliases) or a pull manifest is never fetched. And every
file fetched must have a checksum in the listing: one the daemon cannot verify is
refused, never published.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..catalog.manifest import MANIFEST_NAME
from ..catalog.metadata import SIDECAR_SUFFIX
from ..catalog.scan import MODEL_EXTENSIONS
from ..errors import ChooseModelFile, InvalidListing, InvalidParams, ModelNotFound
from .hub import Listing, RepoFile

MAX_PATTERNS = 64
MAX_PATTERN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class Selection:
    models: tuple[RepoFile, ...]
    extras: tuple[RepoFile, ...]  # technical and other included files

    @property
    def files(self) -> tuple[RepoFile, ...]:
        return self.extras + self.models  # model files last: published last


def check_patterns(patterns: Sequence[str] | None, what: str) -> tuple[str, ...]:
    patterns = tuple(patterns or ())
    if len(patterns) > MAX_PATTERNS:
        raise InvalidParams(f"at most {MAX_PATTERNS} {what} patterns")
    for pattern in patterns:
        bad = any(ord(c) < 32 for c in pattern) or "\\" in pattern
        if not pattern or len(pattern) > MAX_PATTERN_LENGTH or bad:
            raise InvalidParams(f"invalid {what} pattern {pattern[:80]!r}")
    return patterns


def matches(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        if pattern.endswith("/"):
            if path.startswith(pattern) or fnmatch.fnmatchcase(path, pattern + "*"):
                return True
        elif fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


def is_model_file(path: str) -> bool:
    return path.lower().endswith(MODEL_EXTENSIONS)


def select(
    listing: Listing,
    *,
    file: str | None,
    include: Sequence[str],
    exclude: Sequence[str],
    technical: Sequence[str],
) -> Selection:
    files = [f for f in listing.files if not _reserved(f.path)]
    candidates = [f for f in files if is_model_file(f.path) and not matches(f.path, exclude)]
    if file is not None:
        models = [_named(listing, candidates, file)]
    elif include:
        models = [f for f in candidates if matches(f.path, include)]
    else:
        models = candidates
    if not models:
        raise ModelNotFound(_none_found(listing, include), available=_paths(candidates))
    if len(models) > 1 and file is None and not include:
        raise ChooseModelFile(
            f"{listing.repo} has {len(models)} model files; pick one (FILE or --include)",
            candidates=[{"file": f.path, "size_bytes": f.size} for f in models],
        )
    chosen = {f.path for f in models}
    extras = [
        f
        for f in files
        if f.path not in chosen
        and not is_model_file(f.path)
        and not matches(f.path, exclude)
        and (_is_technical(f, models, technical) or (include and matches(f.path, include)))
    ]
    for f in models + extras:
        if not (f.sha256 or f.blob_id):
            raise InvalidListing(
                f"the Hub lists no checksum for {f.path!r} of {listing.repo}; "
                "a file that cannot be verified is never published"
            )
    return Selection(tuple(models), tuple(extras))


def _reserved(path: str) -> bool:
    """The daemon's own files: a repo must never bring them in."""
    name = path.rsplit("/", 1)[-1]
    return name == MANIFEST_NAME or name.lower().endswith(SIDECAR_SUFFIX)


def _named(listing: Listing, candidates: list[RepoFile], file: str) -> RepoFile:
    exact = [f for f in candidates if f.path == file]
    by_name = [f for f in candidates if f.path.rsplit("/", 1)[-1] == file]
    found = exact or by_name
    if len(found) == 1:
        return found[0]
    if found:
        raise ChooseModelFile(
            f"{file!r} names several files in {listing.repo}; give its full path",
            candidates=[{"file": f.path, "size_bytes": f.size} for f in found],
        )
    raise ModelNotFound(
        f"{listing.repo} has no model file {file[:120]!r}; model files: "
        + (", ".join(_paths(candidates)[:20]) or "none"),
        available=_paths(candidates),
    )


def _none_found(listing: Listing, include: Sequence[str]) -> str:
    if include:
        return f"no model file of {listing.repo} matches {', '.join(include)}"
    return f"{listing.repo} has no .gguf or .rkllm file"


def _paths(files: Iterable[RepoFile]) -> list[str]:
    return [f.path for f in files]


def _is_technical(f: RepoFile, models: Sequence[RepoFile], technical: Sequence[str]) -> bool:
    folder, _, name = f.path.rpartition("/")
    if name not in technical:
        return False
    return folder == "" or any(m.path.rpartition("/")[0] == folder for m in models)
