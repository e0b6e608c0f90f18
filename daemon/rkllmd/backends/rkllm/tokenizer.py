"""The model's own tokenizer for an .rkllm model: the ``tokenizer.json`` next to it.

The RKLLM runtime has no tokenize call. A pull from the Hub fetches the repository's
``tokenizer.json`` beside the model (``hub.technical_files``); with the ``tokenizers``
library it gives exact token ids and counts. Where it is present it replaces the
byte-based estimates (context checks, the KV-cache plan, usage without runtime
figures); where it is absent, token routes answer a clear error (400
``tokenizer_unavailable``) and the estimates stay.

Looked up as ``<model stem>.tokenizer.json`` (several models in one folder), then
``tokenizer.json``. A file the library cannot read is logged and ignored.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ...errors import InvalidParams, TokenizerUnavailable

logger = logging.getLogger(__name__)

MAX_TOKENIZER_BYTES = 64 * 1024 * 1024


class ModelTokenizer:
    def __init__(self, tokenizer: Any, source: str) -> None:
        self._tokenizer = tokenizer
        self.source = source  # the file name, for the props
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

    def count(self, text: bytes) -> int:
        """Tokens of a piece of prompt (no BOS: the runtime adds that once)."""
        return len(self.encode(text.decode("utf-8", errors="replace"), False))

    def encode(self, text: str, add_bos: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_bos).ids)

    def decode(self, tokens: list[int], special: bool) -> str:
        bad = [t for t in tokens if not 0 <= t < self.vocab_size]
        if bad:
            raise InvalidParams(
                f"token ids must be in 0..{self.vocab_size - 1}; got {bad[0]}", param="tokens"
            )
        return str(self._tokenizer.decode(tokens, skip_special_tokens=not special))


def find_tokenizer(model: Path) -> ModelTokenizer | None:
    for candidate in (
        model.with_name(f"{model.stem}.tokenizer.json"),
        model.parent / "tokenizer.json",
    ):
        if candidate.is_file():
            return _open(candidate)
    return None


def _open(path: Path) -> ModelTokenizer | None:
    try:
        from tokenizers import Tokenizer
    except ImportError:
        logger.warning("the tokenizers package is missing: token counts stay estimates")
        return None
    try:
        if path.stat().st_size > MAX_TOKENIZER_BYTES:
            raise ValueError("larger than 64 MiB")
        return ModelTokenizer(Tokenizer.from_file(str(path)), path.name)
    except Exception as exc:  # the library raises its own exception types
        logger.warning("ignoring %s: the tokenizers library cannot read it (%s)", path.name, exc)
        return None


def require(tokenizer: ModelTokenizer | None) -> ModelTokenizer:
    if tokenizer is None:
        raise TokenizerUnavailable(
            "tokenizing needs the model's tokenizer.json next to the .rkllm file "
            "(rkllmctl pull fetches it with the model); the NPU runtime cannot tokenize"
        )
    return tokenizer
