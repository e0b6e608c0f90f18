"""The thin layer over llama.cpp's C API (llama-cpp-python's low-level bindings).

Everything the engine needs from libllama lives here: a context with N sequences
and an abort hook, a batch whose arrays are numpy buffers we own (so filling a
prefill chunk is a slice assignment, not thousands of ctypes stores), the KV
memory operations per sequence, and views of a logits row.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ...errors import LoadFailed

# llama_token_data {int32 id; float logit; float p}: a numpy record with the C layout.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)

# llama_decode's return codes (llama.h).
DECODE_OK = 0
DECODE_NO_SLOT = 1
DECODE_ABORTED = 2


class Batch:
    """A llama_batch over our own numpy arrays; one sequence id per token."""

    def __init__(self, lib: Any, capacity: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.seq = np.zeros(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        self._n_seq_id = np.ones(capacity, np.int32)
        int32_p = ctypes.POINTER(ctypes.c_int32)
        base = self.seq.ctypes.data
        # seq_id is an array of pointers, one per token, each to that token's id list:
        # here, to the token's own cell of self.seq.
        self._seq_ptrs = (int32_p * capacity)(
            *(ctypes.cast(base + 4 * i, int32_p) for i in range(capacity))
        )
        self.struct = lib.llama_batch()
        self.struct.token = self.token.ctypes.data_as(int32_p)
        self.struct.embd = ctypes.POINTER(ctypes.c_float)()
        self.struct.pos = self.pos.ctypes.data_as(int32_p)
        self.struct.n_seq_id = self._n_seq_id.ctypes.data_as(int32_p)
        self.struct.seq_id = ctypes.cast(self._seq_ptrs, ctypes.POINTER(int32_p))
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.n = 0

    def clear(self) -> None:
        self.n = 0

    def add(self, tokens: Sequence[int], pos: int, seq_id: int, outputs: int) -> int:
        """Append tokens of one sequence from position ``pos``; the last ``outputs`` of
        them produce logits. Returns the batch index of the first appended token."""
        start, count = self.n, len(tokens)
        end = start + count
        if count == 1:  # the decode step's common case: scalar stores are ~10x cheaper
            self.token[start] = tokens[0]
            self.pos[start] = pos
            self.seq[start] = seq_id
            self.logits[start] = 1 if outputs else 0
            self.n = end
            return start
        self.token[start:end] = tokens
        self.pos[start:end] = np.arange(pos, pos + count, dtype=np.int32)
        self.seq[start:end] = seq_id
        self.logits[start:end] = 0
        if outputs:
            self.logits[end - outputs : end] = 1
        self.n = end
        return start

    @property
    def free(self) -> int:
        return self.capacity - self.n

    def finalize(self) -> Any:
        self.struct.n_tokens = self.n
        return self.struct


class AbortHook:
    """llama.cpp's abort callback, armed only for decodes that may need it.

    ggml's CPU backend calls it before every graph node (from its first thread), so
    a Python callback costs ~1 µs per node: nothing next to a prefill chunk, but a
    few percent of a single-token decode step. The engine arms it for batches that
    carry prefill and disarms it for pure decode steps, which are short anyway.
    """

    def __init__(self, lib: Any, ctx: Any) -> None:
        self._lib = lib
        self._ctx = ctx
        self._should_abort: Callable[[], bool] = _never
        # Kept referenced: the C side holds the function pointer.
        self._callback = lib.ggml_abort_callback(self._check)
        self._null = lib.ggml_abort_callback()
        self.armed = False
        self.checks = 0  # calls from llama.cpp (a decode is running when it grows)

    def _check(self, _data: Any) -> bool:
        self.checks += 1
        try:
            return self._should_abort()
        except Exception:  # an exception cannot cross the C boundary
            return False

    def arm(self, should_abort: Callable[[], bool]) -> None:
        self._should_abort = should_abort
        if not self.armed:
            self._lib.llama_set_abort_callback(self._ctx, self._callback, None)
            self.armed = True

    def disarm(self) -> None:
        self._should_abort = _never
        if self.armed:
            self._lib.llama_set_abort_callback(self._ctx, self._null, None)
            self.armed = False


def _never() -> bool:
    return False


class Context:
    """One llama_context over already loaded weights, with ``n_seq`` KV streams."""

    def __init__(
        self,
        lib: Any,
        model: Any,
        *,
        n_ctx: int,
        n_seq: int,
        n_batch: int,
        threads: int,
    ) -> None:
        self._lib = lib
        params = lib.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        # One KV stream per sequence: attention of a sequence reads only its own
        # cells (a unified cache was about half as fast with 4 sequences).
        params.kv_unified = False
        self.ptr = lib.llama_init_from_model(model, params)
        if not self.ptr:
            raise LoadFailed(
                f"llama.cpp could not create a context of {n_ctx} tokens for {n_seq} sequences"
            )
        self.n_ctx = int(lib.llama_n_ctx(self.ptr))
        self.n_seq = n_seq
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(self.ptr))
        self.n_batch = int(lib.llama_n_batch(self.ptr))
        self._memory = lib.llama_get_memory(self.ptr)
        self.abort = AbortHook(lib, self.ptr)

    def decode(self, batch: Batch) -> int:
        return int(self._lib.llama_decode(self.ptr, batch.finalize()))

    def logits_row(self, index: int, n_vocab: int) -> npt.NDArray[np.float32]:
        """A view (not a copy) of the logits of batch entry ``index``; valid until the
        next decode."""
        pointer = self._lib.llama_get_logits_ith(self.ptr, index)
        return np.ctypeslib.as_array(pointer, shape=(n_vocab,))

    # --- KV memory of one sequence ---------------------------------------------------

    def seq_rm(self, seq: int, start: int, end: int = -1) -> bool:
        return bool(self._lib.llama_memory_seq_rm(self._memory, seq, start, end))

    def seq_cp(self, src: int, dst: int) -> None:
        """Copy a whole sequence (separate KV streams can only be copied whole)."""
        self._lib.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def seq_pos_max(self, seq: int) -> int:
        return int(self._lib.llama_memory_seq_pos_max(self._memory, seq))

    def clear(self) -> None:
        self._lib.llama_memory_clear(self._memory, True)

    def close(self) -> None:
        if self.ptr:
            self.abort.disarm()
            self._lib.llama_free(self.ptr)
            self.ptr = None


class Pieces:
    """Token id -> bytes of its text, cached (each id is converted once)."""

    def __init__(self, lib: Any, vocab: Any) -> None:
        self._lib = lib
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(256)
        self._cache: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        piece = self._cache.get(token)
        if piece is None:
            piece = self._convert(token)
            self._cache[token] = piece
        return piece

    def _convert(self, token: int) -> bytes:
        size = len(self._buffer)
        n = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, size, 0, False)
        if n < 0:  # the buffer was too small: -n is the size needed
            self._buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._buffer, -n, 0, False)
        return self._buffer.raw[:n]
