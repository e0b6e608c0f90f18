"""ctypes binding of librknnrt (the RKNN runtime), just enough to run a vision encoder.

Our own declarations, written from the project's ABI notes (the vendor header is
marked confidential and is not used). Eight functions: init, query, set_core_mask,
inputs_set, run, outputs_get, outputs_release, destroy. Loaded in the worker
process only, next to librkllmrt, when a model has a ``.rknn`` encoder beside it.

Lookup order: the configured ``rkllm.rknn_library``, then the dynamic loader's
search path, then ``/usr/lib/librknnrt.so``.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_char, c_float, c_int, c_int8, c_int32, c_uint8, c_uint32
from ctypes import c_void_p as c_voidp
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIBRARY_NAME = "librknnrt.so"
FALLBACK_PATH = Path("/usr/lib/librknnrt.so")

# rknn_query commands
QUERY_IN_OUT_NUM, QUERY_INPUT_ATTR, QUERY_OUTPUT_ATTR, QUERY_SDK_VERSION = 0, 1, 2, 5
# rknn_tensor_type / rknn_tensor_format
TYPE_FLOAT32, TYPE_FLOAT16, TYPE_INT8, TYPE_UINT8 = 0, 1, 2, 3
FMT_NCHW, FMT_NHWC = 0, 1
# rknn_core_mask: let the runtime choose
CORE_AUTO = 0

# rknn_context is a 64-bit integer on LP64 (aarch64) and 32-bit on armhf.
Context = ctypes.c_uint64 if ctypes.sizeof(c_voidp) == 8 else ctypes.c_uint32

# Sizes on LP64 (aarch64, and x86_64 for the test double), from the ABI notes.
EXPECTED_SIZES = {
    "rknn_tensor_attr": 376,
    "rknn_input": 32,
    "rknn_output": 24,
    "rknn_input_output_num": 8,
    "rknn_sdk_version": 512,
}


class InOutNum(Structure):
    _fields_ = [("n_input", c_uint32), ("n_output", c_uint32)]


class TensorAttr(Structure):
    _fields_ = [
        ("index", c_uint32),
        ("n_dims", c_uint32),
        ("dims", c_uint32 * 16),
        ("name", c_char * 256),
        ("n_elems", c_uint32),
        ("size", c_uint32),
        ("fmt", c_int32),
        ("type", c_int32),
        ("qnt_type", c_int32),
        ("fl", c_int8),
        ("zp", c_int32),
        ("scale", c_float),
        ("w_stride", c_uint32),
        ("size_with_stride", c_uint32),
        ("pass_through", c_uint8),
        ("h_stride", c_uint32),
    ]


class SdkVersion(Structure):
    _fields_ = [("api_version", c_char * 256), ("drv_version", c_char * 256)]


class Input(Structure):
    _fields_ = [
        ("index", c_uint32),
        ("buf", c_voidp),
        ("size", c_uint32),
        ("pass_through", c_uint8),
        ("type", c_int32),
        ("fmt", c_int32),
    ]


class Output(Structure):
    _fields_ = [
        ("want_float", c_uint8),
        ("is_prealloc", c_uint8),
        ("index", c_uint32),
        ("buf", c_voidp),
        ("size", c_uint32),
    ]


STRUCTS: dict[str, type[Structure]] = {
    "rknn_tensor_attr": TensorAttr,
    "rknn_input": Input,
    "rknn_output": Output,
    "rknn_input_output_num": InOutNum,
    "rknn_sdk_version": SdkVersion,
}


class RknnError(Exception):
    """A librknnrt call failed; the message names the call and its code."""


def sizes_match() -> list[str]:
    """Mismatches between ctypes and the LP64 layout (empty on 32-bit hosts: unchecked)."""
    if ctypes.sizeof(c_voidp) != 8:
        return []
    return [
        f"{name} is {ctypes.sizeof(kind)} bytes, expected {EXPECTED_SIZES[name]}"
        for name, kind in STRUCTS.items()
        if ctypes.sizeof(kind) != EXPECTED_SIZES[name]
    ]


def bind(lib: ctypes.CDLL) -> None:
    ctx = Context
    table: dict[str, list[Any]] = {
        "rknn_init": [POINTER(ctx), c_voidp, c_uint32, c_uint32, c_voidp],
        "rknn_destroy": [ctx],
        "rknn_query": [ctx, c_int, c_voidp, c_uint32],
        "rknn_set_core_mask": [ctx, c_int],
        "rknn_inputs_set": [ctx, c_uint32, POINTER(Input)],
        "rknn_run": [ctx, c_voidp],
        "rknn_outputs_get": [ctx, c_uint32, POINTER(Output), c_voidp],
        "rknn_outputs_release": [ctx, c_uint32, POINTER(Output)],
    }
    for name, argtypes in table.items():
        func = getattr(lib, name)
        func.restype = c_int
        func.argtypes = argtypes


def open_library(configured: str | None) -> tuple[ctypes.CDLL, str] | None:
    """librknnrt from the configured path, the loader path or /usr/lib; None if absent
    (the model then loads without vision, with a note saying why)."""
    candidates = [configured] if configured else [LIBRARY_NAME, str(FALLBACK_PATH)]
    for candidate in candidates:
        if "/" in candidate and not Path(candidate).is_file():
            continue
        try:
            lib = ctypes.CDLL(candidate)
        except OSError:
            continue
        missing = [n for n in ("rknn_init", "rknn_outputs_get") if not hasattr(lib, n)]
        if missing:
            continue
        bind(lib)
        return lib, candidate
    return None


@dataclass(frozen=True)
class EncoderShape:
    """What the encoder takes and gives, read from the model (rknn_query)."""

    height: int
    width: int
    n_outputs: int
    tokens: int  # image tokens per image: the first output dim > 1
    dim: int  # floats per token of one output: the dim after it

    @property
    def token_width(self) -> int:
        """Floats per image token handed to RKLLM: the outputs side by side."""
        return self.dim * self.n_outputs


class RknnModel:
    """One rknn_context: load once, run per image, destroy with the model."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self._lib: Any = lib
        self._ctx = Context(0)
        rc = int(self._lib.rknn_init(ctypes.byref(self._ctx), str(path).encode(), 0, 0, None))
        if rc != 0:
            self._ctx = Context(0)
            raise RknnError(f"rknn_init failed ({rc})")
        try:
            self.shape = self._query_shape()
            self.sdk = self._query_sdk()
            # The encoder shares the NPU with the LLM: let the runtime pick its cores.
            self._lib.rknn_set_core_mask(self._ctx, CORE_AUTO)
        except RknnError:
            self.destroy()
            raise

    def _query(self, cmd: int, info: Structure) -> None:
        rc = int(self._lib.rknn_query(self._ctx, cmd, ctypes.byref(info), ctypes.sizeof(info)))
        if rc != 0:
            raise RknnError(f"rknn_query({cmd}) failed ({rc})")

    def _query_shape(self) -> EncoderShape:
        counts = InOutNum()
        self._query(QUERY_IN_OUT_NUM, counts)
        if counts.n_input != 1 or counts.n_output < 1:
            raise RknnError(
                f"a vision encoder has one input and some outputs; this one has "
                f"{counts.n_input} and {counts.n_output}"
            )
        attr = TensorAttr(index=0)
        self._query(QUERY_INPUT_ATTR, attr)
        dims = list(attr.dims[: attr.n_dims])
        if len(dims) != 4:
            raise RknnError(f"the encoder's input has {len(dims)} dims, not 4")
        height, width = (dims[2], dims[3]) if attr.fmt == FMT_NCHW else (dims[1], dims[2])
        tokens = dim = 0
        for index in range(counts.n_output):
            out = TensorAttr(index=index)
            self._query(QUERY_OUTPUT_ATTR, out)
            shape = list(out.dims[: out.n_dims])
            first = next((i for i, d in enumerate(shape) if d > 1), None)
            if first is None or first + 1 >= len(shape):
                raise RknnError(f"output {index} has no token and width dims: {shape}")
            this = (shape[first], shape[first + 1])
            if index and this != (tokens, dim):
                raise RknnError("the encoder's outputs disagree on tokens or width")
            tokens, dim = this
        return EncoderShape(int(height), int(width), int(counts.n_output), int(tokens), int(dim))

    def _query_sdk(self) -> str:
        sdk = SdkVersion()
        try:
            self._query(QUERY_SDK_VERSION, sdk)
        except RknnError:
            return "unknown"
        return bytes(sdk.api_version).decode(errors="replace")

    def encode(self, pixels: bytes, out: Any, offset: int) -> None:
        """Run one image (uint8 NHWC of the input size) and write its embeddings into
        the float array ``out`` from ``offset``: tokens x (outputs x dim), the outputs
        interleaved per token as RKLLM expects."""
        shape = self.shape
        # The runtime only reads the input: it gets the bytes object's own buffer.
        buf = ctypes.c_char_p(pixels)
        inp = Input(index=0, buf=ctypes.cast(buf, c_voidp), size=len(pixels))
        inp.pass_through, inp.type, inp.fmt = 0, TYPE_UINT8, FMT_NHWC
        self._check("rknn_inputs_set", self._lib.rknn_inputs_set(self._ctx, 1, ctypes.byref(inp)))
        self._check("rknn_run", self._lib.rknn_run(self._ctx, None))
        outputs = (Output * shape.n_outputs)()
        for i in range(shape.n_outputs):
            outputs[i].index, outputs[i].want_float, outputs[i].is_prealloc = i, 1, 0
        self._check(
            "rknn_outputs_get",
            self._lib.rknn_outputs_get(self._ctx, shape.n_outputs, outputs, None),
        )
        try:
            self._interleave(outputs, out, offset)
        finally:
            # Every output, not just the first (the vendor demo leaks the others).
            self._lib.rknn_outputs_release(self._ctx, shape.n_outputs, outputs)

    def _interleave(self, outputs: Any, out: Any, offset: int) -> None:
        shape = self.shape
        row = shape.dim * 4
        need = shape.tokens * row
        base = ctypes.addressof(out) + offset * 4
        for i in range(shape.n_outputs):
            if not outputs[i].buf or outputs[i].size < need:
                raise RknnError(f"output {i} holds {outputs[i].size} bytes, expected {need}")
            if shape.n_outputs == 1:
                ctypes.memmove(base, outputs[i].buf, need)
                continue
            for t in range(shape.tokens):
                dest = base + (t * shape.n_outputs + i) * row
                ctypes.memmove(dest, outputs[i].buf + t * row, row)

    def _check(self, call: str, rc: int) -> None:
        if rc != 0:
            raise RknnError(f"{call} failed ({rc})")

    def destroy(self) -> None:
        if self._ctx.value:
            self._lib.rknn_destroy(self._ctx)
            self._ctx = Context(0)
