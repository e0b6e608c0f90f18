"""A spec-conformant front for jsonrpcserver.

jsonrpcserver validates a batch as a whole, has no size limits and copies
exception text into errors. Here each line is parsed once, batches are bounded
and split so every entry gets its own answer, and only entries that are
well-formed objects reach the library.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from jsonrpcserver import async_dispatch_to_serializable

from ..untrusted import MAX_DEPTH, exceeds_depth
from .errors import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, error_response
from .methods import CallContext, Method

# How deep arrays and objects may nest: where Python 3.11/3.12's parser stopped (its
# recursion limit). 3.13's parser goes far deeper; the protocol must not change with
# the interpreter.
MAX_NESTING = 1000
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))


class Dispatcher:
    def __init__(self, methods: Mapping[str, Method], *, max_batch: int) -> None:
        self._methods = dict(methods)
        self._max_batch = max_batch

    async def handle(self, line: bytes, ctx: CallContext) -> Any:
        """Answer one framed request; ``None`` means send nothing."""
        try:
            if too_deep(line):
                raise RecursionError
            data = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):  # nesting beyond the C limit
            return error_response(None, PARSE_ERROR, "Parse error")
        if not isinstance(data, list):
            return await self._entry(data, ctx)
        if not data:
            return error_response(None, INVALID_REQUEST, "Invalid Request: empty batch")
        if len(data) > self._max_batch:
            return error_response(
                None, INVALID_REQUEST, f"Invalid Request: batch larger than {self._max_batch}"
            )
        # Entries run in order: a batch must not overtake the FIFO model slot.
        answers = [await self._entry(entry, ctx) for entry in data]
        present = [a for a in answers if a is not None]
        return present or None

    async def _entry(self, entry: Any, ctx: CallContext) -> Any:
        if not isinstance(entry, dict):
            return error_response(None, INVALID_REQUEST, "Invalid Request")
        params = entry.get("params")
        if isinstance(params, dict) and _well_formed(entry) and exceeds_depth(params):
            if "id" not in entry:
                return None
            return error_response(
                entry.get("id"),
                INVALID_PARAMS,
                f"Invalid params: nested deeper than {MAX_DEPTH} levels",
            )
        if isinstance(params, list) and _well_formed(entry):
            request_id = entry.get("id")
            if "id" not in entry:
                return None
            return error_response(
                request_id, INVALID_PARAMS, "Invalid params: use named parameters"
            )
        return await async_dispatch_to_serializable(
            "", methods=self._methods, context=ctx, deserializer=lambda _: entry
        )


def _well_formed(entry: dict[str, Any]) -> bool:
    """A request the library would accept, apart from positional params: only then is
    "use named parameters" the right answer (and its id safe to echo)."""
    request_id = entry.get("id")
    return (
        entry.get("jsonrpc") == "2.0"
        and isinstance(entry.get("method"), str)
        and (request_id is None or type(request_id) in (int, float, str))
    )


def too_deep(line: bytes, limit: int = MAX_NESTING) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (brackets in strings aside).

    Counting is C-speed; only a line with more than ``limit`` brackets is walked, and
    then only its brackets.
    """
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    depth = 0
    for byte in _STRINGS.sub(b"", line).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > limit:
            return True
    return False
