"""The daemon's own cost per image on the NPU path, on the librknnrt double.

Usage: ``.venv/bin/python bench/npu_vision.py [--rounds N]``

For one image, every step rkllmd itself takes between the client's base64 and the
encoder's embeddings handed to RKLLM, timed separately and interleaved round by
round (medians with min-max, in milliseconds):

- ``intake``: base64 decode and header check at the edge (images.decode_image);
- ``pipe``: the image's trip over the worker pipe (ChatMessage to_dict, JSON, back);
- ``preprocess``: decode, RGB, grey square pad, bilinear resize, uint8 NHWC (vision.preprocess);
- ``encoder_call``: the binding's work around the encoder: inputs_set, run, outputs_get,
  the copy of the embeddings into RKLLM's buffer, release. On the double ``run``
  hashes the pixels; on a board it is the NPU's seconds, which are not ours;
- ``total``: the sum per round.

Images: a 448x448 JPEG and PNG (the encoder's own size: padding and resizing are
no-ops, the case the < 5 ms target is for) and a 1280x720 JPEG (a typical photo:
pad and resize to 448x448). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import io
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "daemon"))

from PIL import Image  # noqa: E402
from rkllmd.backends.rkllm.rknn import RknnModel, open_library  # noqa: E402
from rkllmd.backends.rkllm.vision import preprocess  # noqa: E402
from rkllmd.config import VisionSection  # noqa: E402
from rkllmd.images import decode_image  # noqa: E402
from rkllmd.requests import ChatMessage  # noqa: E402

from tests.fixtures.build_double import rknn_library, write_encoder  # noqa: E402

SIZE = 448


def photo(width: int, height: int, fmt: str) -> bytes:
    """A picture with detail everywhere (gradients plus noise), so codecs work for it."""
    rng = random.Random(13)
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 255) // width ^ rng.randrange(64), (y * 255) // height, (x + y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    buf = io.BytesIO()
    img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn()
    return (time.perf_counter() - start) * 1000, value


def one_round(text: str, encoder: RknnModel, out: Any) -> dict[str, float]:
    limits = VisionSection()
    t_intake, image = timed(lambda: decode_image(text, None, limits))
    message = ChatMessage("user", "What is this?", images=(image,))

    def pipe() -> ChatMessage:
        return ChatMessage.from_dict(json.loads(json.dumps(message.to_dict())))

    t_pipe, arrived = timed(pipe)
    shape = encoder.shape
    t_pre, pixels = timed(lambda: preprocess(arrived.images[0].data, shape.width, shape.height))
    t_enc, _ = timed(lambda: encoder.encode(pixels, out, 0))
    return {
        "intake": t_intake,
        "pipe": t_pipe,
        "preprocess": t_pre,
        "encoder_call": t_enc,
        "total": t_intake + t_pipe + t_pre + t_enc,
    }


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()
    opened = open_library(str(rknn_library()))
    assert opened is not None
    with tempfile.TemporaryDirectory() as folder:
        path = write_encoder(Path(folder), "encoder.rknn", height=SIZE, width=SIZE, tokens=256)
        encoder = RknnModel(opened[0], path)
        shape = encoder.shape
        out = (ctypes.c_float * (shape.tokens * shape.token_width))()
        images = {
            "jpeg_448": photo(SIZE, SIZE, "JPEG"),
            "png_448": photo(SIZE, SIZE, "PNG"),
            "jpeg_1280x720": photo(1280, 720, "JPEG"),
        }
        texts = {k: base64.b64encode(v).decode() for k, v in images.items()}
        for text in texts.values():  # warm-up: imports, codec tables
            one_round(text, encoder, out)
        series: dict[str, list[dict[str, float]]] = {k: [] for k in texts}
        for _ in range(args.rounds):
            for name, text in texts.items():
                series[name].append(one_round(text, encoder, out))
        encoder.destroy()
    result: dict[str, Any] = {
        "bench": "npu_vision",
        "rounds": args.rounds,
        "encoder_input": [SIZE, SIZE],
        "image_tokens": 256,
        "bytes": {k: len(v) for k, v in images.items()},
    }
    for name, rounds in series.items():
        result[name] = {step: summary([r[step] for r in rounds]) for step in rounds[0]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
