"""Chat templates by name: the built-ins shipped in this package and the owner's folder.

A load request names a template (``prompt_template: "mistral"``); the name is looked
up here and the backend gets the Jinja text. A name is never taken for template text:
an unknown name is refused with the list of names. The owner's folder
(``templates_dir``, ``*.jinja``) is read on every lookup, so a new file is usable at
once; an owner's file with a built-in's name replaces the built-in.

Reads are small files on local disk; callers run them off the event loop
(``asyncio.to_thread``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidParams, UnknownTemplate

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parent
SUFFIX = ".jinja"
MAX_TEMPLATE_BYTES = 256 * 1024
# Jinja source, as opposed to a name: only text with template syntax is taken as one
# (the control socket's ``chat_template`` accepts both).
JINJA_MARKERS = ("{{", "{%")


@dataclass(frozen=True, slots=True)
class ChatTemplate:
    name: str  # the name it was found under; "custom" for inline Jinja source
    text: str
    origin: str  # "builtin", "owner" or "inline"


def _listing(folder: Path | None) -> dict[str, Path]:
    if folder is None:
        return {}
    try:
        return {
            p.name[: -len(SUFFIX)]: p
            for p in folder.iterdir()
            if p.name.endswith(SUFFIX) and not p.name.startswith(".") and p.is_file()
        }
    except OSError:  # no folder (the common case) or not readable: built-ins only
        return {}


class TemplateLibrary:
    def __init__(self, owner_dir: Path | None) -> None:
        self._owner_dir = owner_dir

    def _files(self) -> dict[str, tuple[Path, str]]:
        files = {name: (path, "builtin") for name, path in _listing(BUILTIN_DIR).items()}
        files.update({name: (path, "owner") for name, path in _listing(self._owner_dir).items()})
        return files

    def names(self) -> list[str]:
        return sorted(self._files())

    def get(self, name: str) -> ChatTemplate:
        found = self._files().get(name)
        if found is None:
            raise UnknownTemplate(
                f"unknown prompt template {name!r}; available: {', '.join(self.names())}",
                param="prompt_template",
                available=self.names(),
            )
        path, origin = found
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_TEMPLATE_BYTES + 1)
        except OSError as exc:
            logger.warning("cannot read template %r: %s", name, exc.strerror)
            raise InvalidParams(f"the template {name!r} cannot be read") from None
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise InvalidParams(f"the template {name!r} is larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            return ChatTemplate(name, raw.decode("utf-8"), origin)
        except UnicodeDecodeError:
            raise InvalidParams(f"the template {name!r} is not UTF-8 text") from None

    def resolve(self, value: str) -> ChatTemplate:
        """A name, or (control socket) Jinja source given inline."""
        if any(marker in value for marker in JINJA_MARKERS):
            return ChatTemplate("custom", value, "inline")
        return self.get(value)
