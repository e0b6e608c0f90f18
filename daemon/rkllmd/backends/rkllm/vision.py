"""Vision on the NPU: the ``.rknn`` encoder paired with an ``.rkllm`` model.

RKLLM takes images as precomputed float32 embeddings (``RKLLM_INPUT_MULTIMODAL``);
a separate vision encoder run through librknnrt makes them. The encoder is found
beside the model when it loads, loaded once, and released with the model:

- the sidecar ``<model stem>.rkllmd.json`` may name it (``"projector": "<file>.rknn"``,
  a file name in the model's folder), else the ``.rknn`` in the folder whose name
  starts most like the model's (``backends/companion.py``, shared with llama.cpp's
  projectors);
- the sidecar's ``"vision"`` object may name the family (``"family": "qwen2-vl"``) or
  give the markers (``"image_start"``, ``"image_end"``, ``"image_content"``).

The markers RKLLM puts around (and repeats in place of) each image are
model-specific: a table per family, told from the model's or the encoder's file
name, overridable in the sidecar. An encoder with no known family and no markers
in the sidecar is not used (the load says so in its notes).

Preprocessing follows Rockchip's demo: decode, RGB, pad to a square of grey 127.5
(128 in uint8) with the image centred, bilinear resize to the encoder's input size,
uint8 NHWC. Normalisation is baked into the ``.rknn`` at conversion.
"""

from __future__ import annotations

import ctypes
import io
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import InvalidImage
from ...untrusted import load_json
from ..companion import SIDECAR_SUFFIX, find_companion
from .rknn import EncoderShape, RknnError, RknnModel, open_library, sizes_match

logger = logging.getLogger(__name__)

IMAGE_TAG = "<image>"
PAD_GREY = (128, 128, 128)  # 127.5 rounded, as OpenCV stores it in uint8
MAX_SIDECAR_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Markers:
    start: str
    end: str
    content: str


# family -> markers (rknn-llm's multimodal README and model cards).
FAMILIES: dict[str, Markers] = {
    "qwen-vl": Markers("<|vision_start|>", "<|vision_end|>", "<|image_pad|>"),
    "internvl3": Markers("<img>", "</img>", "<IMG_CONTEXT>"),
    "minicpm-v": Markers("<image>", "</image>", "<unk>"),
    "deepseek-ocr": Markers("", "", "<\uff5c\u2581pad\u2581\uff5c>"),
}
# Names accepted in the sidecar's "family" for the table's entries.
FAMILY_ALIASES = {
    "qwen2-vl": "qwen-vl",
    "qwen2.5-vl": "qwen-vl",
    "qwen3-vl": "qwen-vl",
    "qwen3.5": "qwen-vl",
    "internvl": "internvl3",
    "minicpm-v4": "minicpm-v",
    "deepseekocr": "deepseek-ocr",
}


def family_of(*names: str) -> str | None:
    """The marker family told from file names (model first, then encoder)."""
    for name in names:
        n = name.lower().replace("_", "-")
        if "internvl" in n:
            return "internvl3"
        if "minicpm" in n:
            return "minicpm-v"
        if "deepseek" in n and "ocr" in n:
            return "deepseek-ocr"
        if "qwen" in n and ("vl" in n.split("-") or "-vl" in n or "qwen3.5" in n or "qwen3-5" in n):
            return "qwen-vl"
    return None


# --- finding the encoder ------------------------------------------------------------


@dataclass(frozen=True)
class EncoderChoice:
    path: Path | None
    markers: Markers | None
    family: str | None
    note: str | None  # why a present encoder is not used


def _sidecar(model: Path) -> dict[str, Any]:
    path = model.with_name(model.stem + SIDECAR_SUFFIX)
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SIDECAR_BYTES + 1)
    except OSError:
        return {}
    if len(raw) > MAX_SIDECAR_BYTES:
        return {}
    try:
        data = load_json(raw)
    except ValueError:
        return {}
    vision = data.get("vision") if isinstance(data, dict) else None
    return vision if isinstance(vision, dict) else {}


def choose_encoder(model: Path) -> EncoderChoice:
    side = _sidecar(model)
    path = find_companion(model, ".rknn")
    if path is None:
        return EncoderChoice(None, None, None, None)
    given = str(side.get("family") or "").lower()
    family = FAMILY_ALIASES.get(given, given) if given else family_of(model.name, path.name)
    base = FAMILIES.get(family or "")
    fields = {k: side.get(f"image_{k}") for k in ("start", "end", "content")}
    if base is None and not all(isinstance(v, str) for v in fields.values()):
        return EncoderChoice(
            None,
            None,
            None,
            f"vision encoder {path.name} found but the model family is unknown: name it "
            f"(one of {', '.join(FAMILIES)}) or give image_start/image_end/image_content "
            'under "vision" in the sidecar',
        )
    markers = Markers(*(v if isinstance(v, str) else getattr(base, k) for k, v in fields.items()))
    return EncoderChoice(path, markers, family or "sidecar", None)


# --- preprocessing ------------------------------------------------------------------


def preprocess(data: bytes, width: int, height: int) -> bytes:
    """An image file's bytes to uint8 RGB NHWC of the encoder's input size."""
    from PIL import Image  # imported where images are decoded: the worker, on demand

    try:
        with Image.open(io.BytesIO(data)) as img:
            # A JPEG much larger than the encoder's input decodes at 1/2, 1/4 or 1/8
            # scale (in the DCT: cheaper and still smooth), never below the size that
            # its longer side is resized to.
            side = max(img.size)
            img.draft("RGB", (-(-width * img.width // side), -(-height * img.height // side)))
            img.load()
            return _square_and_resize(
                img if img.mode == "RGB" else img.convert("RGB"), width, height
            )
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError):
        raise InvalidImage("an image could not be decoded") from None


def _square_and_resize(rgb: Any, width: int, height: int) -> bytes:
    from PIL import Image

    side = max(rgb.size)
    if rgb.size != (side, side):
        canvas = Image.new("RGB", (side, side), PAD_GREY)
        canvas.paste(rgb, ((side - rgb.width) // 2, (side - rgb.height) // 2))
        rgb = canvas
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return bytes(rgb.tobytes())


# --- the encoder as the backend uses it ----------------------------------------------


@dataclass
class Embeddings:
    """Every image of one request, ready for RKLLMMultiModalInput."""

    values: Any  # ctypes float array: n_image x tokens x token_width
    n_image: int
    tokens: int  # per image


class VisionEncoder:
    def __init__(self, model: RknnModel, markers: Markers, family: str, name: str) -> None:
        self.model = model
        self.markers = markers
        self.family = family
        self.name = name
        # Held for the model's life: RKLLM reads them during each run (1.2: from init).
        self.marker_bytes = (markers.start.encode(), markers.end.encode(), markers.content.encode())

    @property
    def shape(self) -> EncoderShape:
        return self.model.shape

    def encode(self, images: list[bytes]) -> Embeddings:
        """Decode, preprocess and encode every image into one contiguous array."""
        shape = self.shape
        per_image = shape.tokens * shape.token_width
        values = (ctypes.c_float * (per_image * len(images)))()
        for i, data in enumerate(images):
            pixels = preprocess(data, shape.width, shape.height)
            self.model.encode(pixels, values, i * per_image)
        return Embeddings(values, len(images), shape.tokens)

    def facts(self) -> dict[str, Any]:
        s = self.shape
        return {
            "encoder": self.name,
            "family": self.family,
            "input": [s.height, s.width],
            "image_tokens": s.tokens,
            "embedding_width": s.token_width,
            "outputs": s.n_outputs,
            "markers": [self.markers.start, self.markers.end, self.markers.content],
            "rknn_sdk": self.model.sdk,
        }

    def close(self) -> None:
        self.model.destroy()


def load_encoder(model: Path, library: str | None) -> tuple[VisionEncoder | None, str | None]:
    """The model's vision encoder loaded on librknnrt, or None and a note saying why
    a present encoder is not used (no note when there is simply none)."""
    choice = choose_encoder(model)
    if choice.path is None or choice.markers is None:
        return None, choice.note
    wrong = sizes_match()
    if wrong:
        return None, "the librknnrt binding does not match this host: " + "; ".join(wrong)
    opened = open_library(library)
    if opened is None:
        return None, (
            f"vision encoder {choice.path.name} found but librknnrt.so was not found: "
            "set rkllm.rknn_library or install it (see docs/board-setup.md)"
        )
    try:
        rknn = RknnModel(opened[0], choice.path)
    except RknnError as exc:
        return None, f"vision encoder {choice.path.name} could not be loaded: {exc}"
    return VisionEncoder(rknn, choice.markers, choice.family or "", choice.path.name), None
