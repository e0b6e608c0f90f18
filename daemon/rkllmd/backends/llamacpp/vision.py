"""Images on the llama.cpp backend: libmtmd, as llama-cpp-python ships it.

A model sees when a multimodal projector is paired with it at load
(``companion.find_companion``: ``*mmproj*.gguf`` next to it, or the sidecar's
``projector``). Per request with images:

1. the chat template renders the conversation with libmtmd's media marker where
   each image goes (before the text of its message; plain strings, so text-only
   templates work too);
2. each image's bytes become a bitmap (libmtmd decodes them: stb_image, in the
   worker), and ``mtmd_tokenize`` splits the prompt into text and image chunks;
3. text chunks become ordinary prompt tokens; each image chunk takes its
   ``n_tokens`` prompt positions as OPAQUE ids and is evaluated by the engine
   through ``MediaChunk.evaluate`` (encode, then decode its embeddings into the
   request's own sequence), so prefix reuse never takes image cells for text.

The daemon hands libmtmd bytes, never a URL or a path: llama-cpp-python's own
handlers would open ``file:`` and ``http:`` URLs themselves. libmtmd's log goes
through llama-cpp-python's quiet callback (otherwise it writes to stderr on every
image), and the projector is freed explicitly before the model.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import GenerationFailed, InvalidImage, InvalidParams, LoadFailed
from ...requests import ImageInput
from ..companion import find_companion
from .native import Context
from .sequence import OPAQUE, MediaChunk

CHUNK_TEXT, CHUNK_IMAGE = 0, 1


@dataclass(slots=True)
class ImageTimes:
    """Where an image request's time before the first token goes (seconds)."""

    decode: float = 0.0  # image bytes -> pixels (and preprocessing, in tokenize)
    encode: float = 0.0  # the vision tower and projector
    prefill: float = 0.0  # the image embeddings into the LLM's context

    def perf(self) -> dict[str, float]:
        return {
            "image_decode_ms": round(self.decode * 1000, 3),
            "image_encode_ms": round(self.encode * 1000, 3),
            "image_prefill_ms": round(self.prefill * 1000, 3),
        }


@dataclass(slots=True)
class MediaPrompt:
    """A prompt with images: token ids (OPAQUE where images go), the image chunks by
    position, and the native chunk list that owns them (freed by ``close``)."""

    tokens: list[int]
    media: dict[int, MediaChunk]
    times: ImageTimes
    _owner: Any = field(default=None, repr=False)
    _free: Any = field(default=None, repr=False)

    def close(self) -> None:
        if self._owner is not None:
            self._free(self._owner)
            self._owner = None


class Projector:
    """The libmtmd context of one loaded model; shared by all its sequences."""

    def __init__(self, lib: Any, path: Path, model: Any, threads: int) -> None:
        import llama_cpp.mtmd_cpp as mtmd

        self._mtmd = mtmd
        self._lib = lib
        self.path = path
        # Silence libmtmd the way llama-cpp-python silences libllama (errors only).
        mtmd.mtmd_log_set(lib._logger.llama_log_callback, None)
        mtmd.mtmd_helper_log_set(lib._logger.llama_log_callback, None)
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False
        self._ctx = mtmd.mtmd_init_from_file(str(path).encode(), model.model, params)
        if not self._ctx:
            raise LoadFailed(
                f"the projector {path.name} does not fit this model "
                "(its projection size must equal the model's embedding size)"
            )
        if not mtmd.mtmd_support_vision(self._ctx):
            self.close()
            raise LoadFailed(f"the projector {path.name} has no vision encoder")
        if mtmd.mtmd_decode_use_mrope(self._ctx):
            # M-RoPE (Qwen-VL) gives an image fewer positions than cells; the engine
            # counts one position per cell.
            self.close()
            raise LoadFailed(f"the projector {path.name} needs M-RoPE, not supported yet")
        self.marker = mtmd.mtmd_default_marker().decode()
        # libmtmd's context is not documented as thread-safe: requests tokenize in
        # their own threads while the engine thread encodes.
        self._lock = threading.Lock()

    @classmethod
    def pair(cls, lib: Any, model_path: Path, model: Any, threads: int) -> Projector | None:
        companion = find_companion(model_path, ".gguf", "mmproj")
        return None if companion is None else cls(lib, companion, model, threads)

    def prompt(
        self, rendered: str, add_special: bool, images: Sequence[ImageInput], n_batch: int
    ) -> MediaPrompt:
        """Token ids and image chunks of a rendered prompt holding one marker per image."""
        mtmd = self._mtmd
        times = ImageTimes()
        with self._lock:
            started = time.perf_counter()
            bitmaps = [self._bitmap(image, i) for i, image in enumerate(images)]
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                text = rendered.encode()
                request = mtmd.mtmd_input_text(text, len(text), add_special, True)
                array = (mtmd.mtmd_bitmap_p_ctypes * len(bitmaps))(*bitmaps)
                status = mtmd.mtmd_tokenize(
                    self._ctx, chunks, ctypes.byref(request), array, len(bitmaps)
                )
            finally:
                for bitmap in bitmaps:
                    mtmd.mtmd_bitmap_free(bitmap)
            times.decode = time.perf_counter() - started
        prompt = MediaPrompt([], {}, times, chunks, mtmd.mtmd_input_chunks_free)
        if status != 0:
            prompt.close()
            if status == 2:
                raise InvalidImage("an image could not be prepared for the model")
            raise InvalidParams("the images do not match the prompt's image markers")
        for index in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, index)
            if mtmd.mtmd_input_chunk_get_type(chunk) == CHUNK_TEXT:
                count = ctypes.c_size_t(0)
                ids = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                prompt.tokens.extend(int(ids[i]) for i in range(count.value))
            elif mtmd.mtmd_input_chunk_get_type(chunk) == CHUNK_IMAGE:
                image = ImageChunk(self, chunk, n_batch, times)
                prompt.media[len(prompt.tokens)] = image
                prompt.tokens.extend([OPAQUE] * image.n_tokens)
            else:
                prompt.close()
                raise GenerationFailed("the projector made a chunk that is not text or image")
        return prompt

    def _bitmap(self, image: ImageInput, index: int) -> Any:
        data = (ctypes.c_uint8 * len(image.data)).from_buffer_copy(image.data)
        bitmap = self._mtmd.mtmd_helper_bitmap_init_from_buf(
            self._ctx, data, len(image.data), False
        )
        if not bitmap:
            raise InvalidImage(f"image {index} cannot be decoded ({image.mime_type})")
        return bitmap

    def evaluate(
        self, chunk: Any, ctx: Context, seq_id: int, position: int, n_batch: int, times: ImageTimes
    ) -> bool:
        """Encode an image chunk, then decode its embeddings into ``seq_id``."""
        mtmd = self._mtmd
        with self._lock:
            started = time.perf_counter()
            if mtmd.mtmd_encode_chunk(self._ctx, chunk) != 0:
                return False
            embeddings = mtmd.mtmd_get_output_embd(self._ctx)
            encoded = time.perf_counter()
            new_n_past = self._lib.llama_pos(0)
            status = mtmd.mtmd_helper_decode_image_chunk(
                self._ctx,
                ctx.ptr,
                chunk,
                embeddings,
                position,
                seq_id,
                n_batch,
                ctypes.byref(new_n_past),
                mtmd.mtmd_helper_post_decode_callback(),
                None,
            )
            times.encode += encoded - started
            times.prefill += time.perf_counter() - encoded
        return bool(status == 0)

    def close(self) -> None:
        if self._ctx:
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None


class ImageChunk:
    """One image of a prompt, for the engine (sequence.MediaChunk)."""

    def __init__(self, projector: Projector, chunk: Any, n_batch: int, times: ImageTimes) -> None:
        self._projector = projector
        self._chunk = chunk  # owned by the prompt's chunk list
        self._n_batch = n_batch
        self._times = times
        self._n_tokens = int(projector._mtmd.mtmd_input_chunk_get_n_tokens(chunk))

    @property
    def n_tokens(self) -> int:
        return self._n_tokens

    def evaluate(self, ctx: Context, seq_id: int, position: int) -> bool:
        return self._projector.evaluate(
            self._chunk, ctx, seq_id, position, self._n_batch, self._times
        )
