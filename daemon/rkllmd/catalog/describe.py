"""A model's card fields (name, description, type, context length) from every source.

Each field has its own order of trust (the first source that knows wins):

- context length: the GGUF header (``<arch>.context_length``, the file itself), the
  Hub's ``meta.json``, then its ``config.json`` (``max_position_embeddings``), the
  owner's sidecar, and what an ``.rkllm`` file name says (``ctx16384``). A context
  stated in an ``.rkllm`` name also caps the Hub's figures: conversion fixes the
  limit, and the Hub files describe the model before it was converted;
- name: the sidecar, ``meta.json``, the GGUF ``general.name``, else the file name
  made readable (conversion tokens and quantisation suffixes dropped);
- description: the sidecar, ``meta.json``, the GGUF ``general.description``, else
  one line made from what is known (architecture, parameters, quantisation, NPU
  platform, context, size);
- type: the sidecar, ``meta.json``, what ``config.json`` or the GGUF architecture
  implies, else ``chat``.

Pure functions over what the scan thread gathered; no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TypeVar

from .gguf import GgufFacts

# Tokens of RKLLM conversion file names: google_gemma-3-270m-w8a8-opt0-hybrid0-npu3-
# ctx16384-rk3588, Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0.
_PLATFORM = re.compile(r"(?i)(?:^|[-_.])(rk\d{4}|rv\d{4}b?)(?=$|[-_.])")
_DTYPE = re.compile(r"(?i)(?:^|[-_.])(w\d+a\d+(?:_g\d+)?)(?=$|[-_.])")
_CONTEXT = re.compile(r"(?i)(?:^|[-_.])ctx[-_]?(\d{2,6})(?=$|[-_.])")
_CORES = re.compile(r"(?i)(?:^|[-_.])npu[-_]?(\d)(?=$|[-_.])")
_CONVERSION_TOKEN = re.compile(
    r"(?i)[-_.](?:rk\d{4}|rv\d{4}b?|w\d+a\d+(?:_g\d+)?|opt-?\d+|hybrid(?:-ratio)?-?[\d.]+"
    r"|npu-?\d|ctx-?\d+|v?\d+\.\d+\.\d+)(?=$|[-_.])"
)
_QUANT_SUFFIX = re.compile(r"(?i)[-_.](?:i?q\d[\w]*|f16|f32|bf16)$")
T = TypeVar("T")
_SIZE = re.compile(r"(?i)(?:^|\s)(\d+(?:\.\d+)?[mb])(?=$|\s)")  # in a readable name


@dataclass(frozen=True, slots=True)
class RkllmName:
    """What an .rkllm file name says about its conversion."""

    platform: str | None = None  # "RK3588"
    dtype: str | None = None  # "W8A8"
    context_length: int | None = None
    npu_cores: int | None = None

    @classmethod
    def parse(cls, stem: str) -> RkllmName:
        platform, dtype = _PLATFORM.search(stem), _DTYPE.search(stem)
        context, cores = _CONTEXT.search(stem), _CORES.search(stem)
        ctx = int(context.group(1)) if context else None
        return cls(
            platform=platform.group(1).upper() if platform else None,
            dtype=dtype.group(1).upper() if dtype else None,
            context_length=ctx if ctx and 0 < ctx <= 1 << 20 else None,
            npu_cores=int(cores.group(1)) if cores else None,
        )


@dataclass(frozen=True, slots=True)
class Declared:
    """What one metadata file states (any field may be missing)."""

    name: str | None = None
    description: str | None = None
    type: str | None = None
    context_length: int | None = None


NOTHING = Declared()


@dataclass(frozen=True, slots=True)
class Card:
    name: str
    description: str
    type: str
    context_length: int | None
    architecture: str | None = None
    parameters: str | None = None  # a size label: "135M", "0.5B"
    quantization: str | None = None  # "Q4_1", "W8A8"
    platform: str | None = None  # the NPU an .rkllm file was converted for


def readable_name(stem: str) -> str:
    """``Qwen2.5-0.5B-Instruct-rk3588-w8a8-opt-0-hybrid-ratio-0.0`` -> ``Qwen2.5 0.5B Instruct``."""
    text = stem
    while True:
        shorter = _QUANT_SUFFIX.sub("", _CONVERSION_TOKEN.sub("", text))
        if shorter == text:
            break
        text = shorter
    words = [w for w in re.split(r"[-_\s]+", text) if w]
    return " ".join(words) or stem


def card(
    stem: str,
    fmt: str,
    size_bytes: int,
    *,
    sidecar: Declared = NOTHING,
    hub: Declared = NOTHING,
    config: Declared = NOTHING,
    gguf: GgufFacts | None = None,
) -> Card:
    """The card fields of one model file, each from its most trusted source."""
    facts = gguf or GgufFacts()
    rkllm = RkllmName.parse(stem) if fmt == "rkllm" else RkllmName()
    context = _first(facts.context_length, hub.context_length, config.context_length)
    if rkllm.context_length is not None:  # conversion caps what the Hub files say
        context = min(context or rkllm.context_length, rkllm.context_length)
    context = context or sidecar.context_length
    size = _SIZE.search(readable_name(stem))
    result = Card(
        name=_first(sidecar.name, hub.name, facts.name) or readable_name(stem),
        description="",
        type=_first(sidecar.type, hub.type, config.type, facts.type) or "chat",
        context_length=context,
        architecture=facts.architecture,
        parameters=facts.size_label or (size.group(1).upper() if size else None),
        quantization=facts.quantization or rkllm.dtype or _quant_of(stem),
        platform=rkllm.platform,
    )
    described = _first(sidecar.description, hub.description, facts.description)
    return replace(result, description=described or _summary(result, fmt, size_bytes, rkllm))


def _first(*values: T | None) -> T | None:
    return next((v for v in values if v is not None), None)


def _quant_of(stem: str) -> str | None:
    match = _QUANT_SUFFIX.search(stem)
    return match.group(0)[1:].upper() if match else None


def _summary(c: Card, fmt: str, size_bytes: int, rkllm: RkllmName) -> str:
    """One line from what is known: "Llama chat model, 135M parameters, Q4_1, ..."."""
    kind = {"embedding": "embedding model", "speech": "speech model", "image": "image model"}
    head = f"{c.architecture} " if c.architecture else ""
    what = head + kind.get(c.type, f"{c.type} model")
    parts = [what[:1].upper() + what[1:]]
    if c.parameters:
        parts.append(f"{c.parameters} parameters")
    if c.quantization:
        parts.append(c.quantization)
    if fmt == "rkllm":
        cores = f", {rkllm.npu_cores} NPU cores" if rkllm.npu_cores else ""
        parts.append(f"RKLLM for the {c.platform}{cores}" if c.platform else "RKLLM (NPU)")
    else:
        parts.append("GGUF (CPU, llama.cpp)")
    if c.context_length:
        parts.append(f"{c.context_length}-token context")
    parts.append(_size(size_bytes))
    return ", ".join(parts)


def _size(size_bytes: int) -> str:
    if size_bytes >= 1 << 30:
        return f"{size_bytes / (1 << 30):.1f} GiB"
    if size_bytes >= 1 << 20:
        return f"{size_bytes / (1 << 20):.0f} MiB"
    return f"{max(size_bytes, 1) / 1024:.0f} KiB"
