"""In-process series of bench/engine.py: the backend the worker hosts, without HTTP.

Grammar cost (a JSON schema compiled to GBNF, checked after sampling) and
speculative decoding (prompt lookup; SmolLM2 drafting for itself).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from rkllmd.backends.llamacpp import LlamaCppBackend
from rkllmd.requests import BackendDefaults, ChatMessage, GenerateRequest, LoadOptions, Sampling
from sse import summary

from tests.helpers import model_source

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer"},
        "city": {"type": "string", "maxLength": 24},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 4},
        "married": {"type": "boolean"},
    },
    "required": ["name", "age", "city", "hobbies", "married"],
    "additionalProperties": False,
}
JSON_QUESTION = "Describe a person as a JSON object: name, age, city, hobbies, married."
REPEAT = (
    "Repeat this text exactly, three times: The quick brown fox jumps over the lazy dog. "
    "A stitch in time saves nine. All that glitters is not gold. Fortune favours the bold."
)


def open_backend(threads: int, **options: Any) -> LlamaCppBackend:
    backend = LlamaCppBackend(BackendDefaults(ctx_size=2048, threads=threads, parallel=1))
    backend.load(Path(model_source()), LoadOptions(**options))
    return backend


def timed(backend: LlamaCppBackend, request: GenerateRequest) -> dict[str, float]:
    stamps: list[float] = []
    result = backend.generate(
        request, lambda *_a, **_k: stamps.append(time.perf_counter()), threading.Event()
    )
    tokens = result.usage.completion_tokens
    figures = {"decode": (tokens - 1) / (stamps[-1] - stamps[0]), "tokens": float(tokens)}
    if result.perf:
        figures["acceptance"] = result.perf["draft_accepted"] / max(1, result.perf["draft_tokens"])
    return figures


def ask(question: str, tokens: int, **sampling: Any) -> GenerateRequest:
    return GenerateRequest(
        messages=(ChatMessage("user", question),),
        sampling=Sampling(max_tokens=tokens, temperature=0.0, **sampling),
    )


def grammar_series(reps: int, threads: int) -> dict[str, Any]:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    grammar = str(json_schema_to_gbnf(json.dumps(PERSON)))
    backend = open_backend(threads)
    try:
        free, bound = [], []
        before = backend._engine.stats.grammar_resamples  # type: ignore[union-attr]
        for _ in range(reps):
            free.append(timed(backend, ask(JSON_QUESTION, 120, ignore_eos=True)))
            bound.append(timed(backend, ask(JSON_QUESTION, 200, grammar=grammar)))
        resampled = backend._engine.stats.grammar_resamples - before  # type: ignore[union-attr]
    finally:
        backend.close()
    constrained_tokens = sum(b["tokens"] for b in bound)
    return {
        "grammar_decode_tok_s": {
            "free": summary([f["decode"] for f in free], 1),
            "json_schema": summary([b["decode"] for b in bound], 1),
            "ratio": summary([b["decode"] / f["decode"] for f, b in zip(free, bound, strict=True)]),
            "resampled_share": round(resampled / constrained_tokens, 3),
        }
    }


def draft_series(reps: int, threads: int) -> dict[str, Any]:
    variants = {
        "none": open_backend(threads),
        "lookup": open_backend(threads, lookup_ngram=3),
        "self_draft": open_backend(threads, draft_model=str(model_source())),
    }
    try:
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        for _ in range(reps):
            for name, backend in variants.items():
                runs[name].append(timed(backend, ask(REPEAT, 160)))
    finally:
        for backend in variants.values():
            backend.close()
    base = [r["decode"] for r in runs["none"]]
    out: dict[str, Any] = {}
    for name, series in runs.items():
        out[name] = {"decode_tok_s": summary([r["decode"] for r in series], 1)}
        if name != "none":
            out[name]["speedup"] = summary(
                [r["decode"] / b for r, b in zip(series, base, strict=True)]
            )
            out[name]["acceptance"] = summary([r.get("acceptance", 0.0) for r in series])
    return {"speculative_repetitive_task": out}


def series(reps: int, threads: int) -> dict[str, Any]:
    return {**grammar_series(reps, threads), **draft_series(reps, threads)}
