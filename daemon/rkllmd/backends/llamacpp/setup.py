"""Loading a GGUF: the library, the file check, the weights, and how many
sequences the context can hold."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, LoadFailed

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_CTX = 4096
DEFAULT_BATCH = 512
DEFAULT_PARALLEL = 4
DEFAULT_DRAFT_TOKENS = 8
# The KV caches of all sequences may take at most this share of the memory that
# is available when the model loads; beyond it, fewer sequences are served.
KV_MEMORY_SHARE = 0.5


def import_llama_cpp() -> Any:
    try:
        import llama_cpp
        import llama_cpp._internals
        import llama_cpp._logger
        import llama_cpp.llama_chat_format
    except ImportError:
        raise BackendUnavailable(
            "the llama.cpp backend (llama-cpp-python) is not installed"
        ) from None
    return llama_cpp


def check_gguf_header(path: Path) -> None:
    with path.open("rb") as handle:
        head = handle.read(8)
    if head[:4] != GGUF_MAGIC:
        raise LoadFailed("the file is not a GGUF model (bad magic bytes)")
    if len(head) < 8 or int.from_bytes(head[4:8], "little") not in (2, 3):
        raise LoadFailed("unsupported GGUF version")


def open_model(lib: Any, path: Path) -> Any:
    """The weights and vocabulary, through llama-cpp-python's model wrapper (the same
    object its ``Llama`` builds on, without a context of its own)."""
    lib._logger.set_verbose(False)
    lib.llama_backend_init()
    try:
        return lib._internals.LlamaModel(
            path_model=str(path), params=lib.llama_model_default_params(), verbose=False
        )
    except (ValueError, RuntimeError) as exc:
        logger.error("llama.cpp failed to load the model: %s", exc)
        raise LoadFailed(
            "llama.cpp could not load the model (corrupt, truncated or unsupported file)"
        ) from None


def kv_bytes_per_token(lib: Any, model: Any) -> int:
    """Estimated KV cache bytes per token (f16 keys and values in every layer)."""
    raw = model.model
    heads = max(1, int(lib.llama_model_n_head(raw)))
    head_dim = int(lib.llama_model_n_embd(raw)) // heads
    kv_heads = int(lib.llama_model_n_head_kv(raw))
    return int(lib.llama_model_n_layer(raw)) * 2 * kv_heads * head_dim * 2


def fit_parallel(lib: Any, model: Any, wanted: int, seq_ctx: int) -> int:
    """As many sequences as wanted, each with a full ``seq_ctx`` context, while their
    KV caches fit the memory budget; at least 1."""
    per_seq = kv_bytes_per_token(lib, model) * seq_ctx
    budget = available_memory() * KV_MEMORY_SHARE
    fits = max(1, int(budget // per_seq)) if per_seq else wanted
    if fits < wanted:
        logger.warning(
            "serving %d sequence(s) instead of %d: %d contexts of %d tokens need %.0f MiB",
            fits,
            wanted,
            wanted,
            seq_ctx,
            wanted * per_seq / 2**20,
        )
    return min(wanted, fits)


def available_memory() -> int:
    try:
        with Path("/proc/meminfo").open(encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 2**62  # unknown: do not limit


def default_threads() -> int:
    """Half the cores: decode is memory-bound, so more threads rarely help, and a
    core left free keeps the daemon and its clients from stalling llama.cpp's
    spinning threads (first-token latency doubled on 2 cores with all of them).
    On an RK3588 this is 4, the number of big cores."""
    return max(1, (os.cpu_count() or 1) // 2)
