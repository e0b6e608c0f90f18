"""Messages on the worker pipes: one JSON object per line in each direction.

daemon -> worker (stdin):   load, generate, embed, tokenize, detokenize, abort, shutdown
worker -> daemon (stdout):  loaded, load_failed, token, done, embedding, tokens, text, error
Only ``load`` may come first; a worker hosts exactly one model for its life.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..wirejson import dumps_line

# Commands
LOAD = "load"
GENERATE = "generate"
EMBED = "embed"
TOKENIZE = "tokenize"
DETOKENIZE = "detokenize"
ABORT = "abort"
SHUTDOWN = "shutdown"

# Events
LOADED = "loaded"
LOAD_FAILED = "load_failed"
TOKEN = "token"  # noqa: S105 - a message kind, not a secret
DONE = "done"
EMBEDDING = "embedding"
TOKENS = "tokens"
TEXT = "text"
ERROR = "error"

# Token events can carry long texts and embeddings later; keep headroom.
MAX_LINE_BYTES = 64 * 1024 * 1024


def encode(kind: str, **fields: Any) -> bytes:
    return dumps_line({"kind": kind, **fields})


def decode(line: bytes) -> dict[str, Any]:
    message = orjson.loads(line)
    if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
        raise ValueError("worker message is not an object with a kind")
    return message
