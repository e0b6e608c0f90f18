"""Fast JSON encoding for the hot paths (every token, every control answer).

orjson is an order of magnitude faster than the standard library on large
answers (a `list` of 1,000 models) and on the small per-token messages. It
refuses what JSON cannot represent faithfully (integers beyond 64 bits, which a
fuzzing client may send as a request id); those rare messages fall back to the
standard library so nothing is ever dropped.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def dumps_line(obj: Any) -> bytes:
    return dumps(obj) + b"\n"
