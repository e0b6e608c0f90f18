"""Parsing data that comes from outside: bounded in size and in nesting.

Python's parsers recurse once per nesting level: 50,000 ``[`` make ``json.loads`` and
``tomllib`` raise ``RecursionError``, which callers that expect ``ValueError`` for bad
input do not catch, and a few hundred levels that parse fine still overflow the stack
later (``dataclasses.asdict``, a template engine). Every parser of outside data (HTTP
bodies, control requests, metadata files, the config file) goes through here: a depth
beyond ``MAX_DEPTH`` and a ``RecursionError`` are both ``TooDeep``, a ``ValueError``.
"""

from __future__ import annotations

import json
import tomllib
from typing import Any

# Deep enough for any real request (a tool's JSON schema nests a few levels per
# property level), shallow enough that nothing downstream comes near the stack limit.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """Nested deeper than allowed."""

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        super().__init__(f"nested deeper than {limit} levels")
        self.limit = limit


def exceeds_depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and dicts in ``value`` nest deeper than ``limit`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_depth(value: Any, limit: int = MAX_DEPTH) -> Any:
    if exceeds_depth(value, limit):
        raise TooDeep(limit)
    return value


def load_json(raw: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` that raises only ``ValueError`` (``TooDeep``, ``UnicodeDecodeError``
    and ``json.JSONDecodeError`` are all ValueErrors) for any bad input."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise TooDeep(max_depth) from None
    return check_depth(data, max_depth)


def load_toml(raw: bytes, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``tomllib.loads`` on bytes; ``ValueError`` for invalid UTF-8, bad TOML or nesting."""
    text = raw.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise TooDeep(max_depth) from None
    return check_depth(data, max_depth)  # type: ignore[no-any-return]
