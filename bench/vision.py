"""Images on the CPU: time to first token, split into image decode, encode and prefill.

In process, on the backend the worker hosts (LlamaCppBackend), with SmolLM2 and the
projector fabricated for the tests (tests/fixtures/mmproj.py: a tiny LLaVA-style
tower, 16 image tokens per image). Series, interleaved rep by rep (text, 1 image,
4 images, text, ...), each rep with a different system line first so that no prompt
cells are reused from the previous rep:

  text     the question alone
  image1   one 448x448 JPEG before the question
  image4   four different 448x448 JPEGs

For each: time from ``generate()`` to the first token (ttft_ms), and from the
backend's own timings: image_decode_ms (bytes to pixels, libmtmd's preprocessing
and tokenizing), image_encode_ms (the vision tower and projector), image_prefill_ms
(the image embeddings into the context); rest_ms is what remains of the TTFT (the
text prefill and the first sampled token). Medians with min-max. One JSON line.

    .venv/bin/python bench/vision.py [--reps 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "daemon"))

from rkllmd.backends.llamacpp import LlamaCppBackend  # noqa: E402
from rkllmd.requests import (  # noqa: E402
    BackendDefaults,
    ChatMessage,
    GenerateRequest,
    ImageInput,
    LoadOptions,
    Sampling,
)

from tests.fixtures.mmproj import write_mmproj  # noqa: E402
from tests.helpers import model_source  # noqa: E402

QUESTION = "Describe what you see in these pictures, one short sentence for each."
FIGURES = ("ttft_ms", "image_decode_ms", "image_encode_ms", "image_prefill_ms", "rest_ms")


def photo(seed: int, size: int = 448) -> ImageInput:
    """A JPEG with some structure (gradients), different per seed."""
    from PIL import Image

    image = Image.new("RGB", (size, size))
    image.putdata(
        [
            ((x * 3 + seed * 40) % 256, (y * 2 + seed * 70) % 256, (x + y) % 256)
            for y in range(size)
            for x in range(size)
        ]
    )
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return ImageInput(out.getvalue(), "image/jpeg", size, size)


def one_run(backend: LlamaCppBackend, rep: int, images: tuple[ImageInput, ...]) -> dict[str, float]:
    first: list[float] = []

    def emit(text: str, index: int = 0, logprobs: Any = None) -> None:
        if not first:
            first.append(time.perf_counter())

    request = GenerateRequest(
        messages=(
            ChatMessage("system", f"Run {rep}. You are a careful observer."),
            ChatMessage("user", QUESTION, images=images),
        ),
        sampling=Sampling(temperature=0.0, max_tokens=4, ignore_eos=True),
    )
    started = time.perf_counter()
    result = backend.generate(request, emit, threading.Event())
    ttft = (first[0] - started) * 1000
    perf = result.perf or {}
    figures = {"ttft_ms": ttft, "prompt_tokens": float(result.usage.prompt_tokens)}
    for name in FIGURES[1:4]:
        figures[name] = float(perf.get(name, 0.0))
    figures["rest_ms"] = ttft - sum(figures[n] for n in FIGURES[1:4])
    return figures


def summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="rkllmd-bench-vision-"))
    model = folder / "SmolLM2.gguf"
    os.link(model_source(), model)
    write_mmproj(folder / "SmolLM2-mmproj.gguf")
    pictures = tuple(photo(seed) for seed in range(4))
    series = {"text": (), "image1": pictures[:1], "image4": pictures}
    backend = LlamaCppBackend(BackendDefaults(ctx_size=2048, threads=args.threads, parallel=1))
    backend.load(model, LoadOptions())
    try:
        one_run(backend, -1, pictures[:1])  # warm-up: first-call allocations
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in series}
        for rep in range(args.reps):
            for name, images in series.items():
                runs[name].append(one_run(backend, rep, images))
    finally:
        backend.close()
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    out: dict[str, Any] = {"bench": "vision", "reps": args.reps, "threads": args.threads}
    for name, results in runs.items():
        out[name] = {"prompt_tokens": int(results[0]["prompt_tokens"])}
        for figure in FIGURES:
            if name != "text" or figure in ("ttft_ms", "rest_ms"):
                out[name][figure] = summary([r[figure] for r in results])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
