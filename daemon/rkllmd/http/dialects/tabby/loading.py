"""TabbyAPI's load request: its body, and what of it applies here.

The request carries ExLlama's knobs; each one is mapped to a load option where the
backend has an equivalent, and otherwise named in the answer's ``notes`` (and the
log) instead of being dropped without a word. ``prompt_template`` is a template name
(``templates/``), never template text.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Literal

from pydantic import AliasChoices, ConfigDict, Field, StrictBool

from .... import errors as e
from ....catalog.entries import ModelEntry
from ....catalog.registry import ModelRegistry
from ....config import Config
from ....requests import LoadOptions
from ....templates import TemplateLibrary
from ....wire import NUMBER
from ...schemas import Body, ModelName

logger = logging.getLogger(__name__)

TemplateName = Annotated[str, Field(min_length=1, max_length=255)]
Context = Annotated[int, Field(ge=1, le=1_048_576), NUMBER]


class TabbyDraftRequest(Body):
    """TabbyAPI's DraftModelLoadRequest (``name`` is accepted for ``draft_model_name``),
    plus ``draft_num_tokens`` from TabbyAPI's draft config: tokens drafted a step."""

    model_config = ConfigDict(extra="ignore")

    draft_model_name: ModelName = Field(validation_alias=AliasChoices("draft_model_name", "name"))
    draft_rope_scale: Annotated[float, Field(gt=0, le=1024), NUMBER] | None = None
    draft_rope_alpha: Annotated[float, Field(gt=0, le=1024), NUMBER] | Literal["auto"] | None = None
    draft_gpu_split: Annotated[list[Annotated[float, NUMBER]], Field(max_length=64)] | None = None
    draft_cache_mode: Annotated[str, Field(max_length=32)] | None = None
    draft_num_tokens: Annotated[int, Field(ge=1, le=64), NUMBER] | None = None


class TabbyLoadRequest(Body):
    """TabbyAPI's ModelLoadRequest (``name`` is accepted for ``model_name``)."""

    model_config = ConfigDict(
        extra="ignore",
        protected_namespaces=(),
        json_schema_extra={
            "anyOf": [
                {"required": ["model_name"], "properties": {"model_name": {"type": "string"}}},
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
            ]
        },
    )

    model_name: ModelName | None = None
    name: ModelName | None = None
    max_seq_len: Context | None = None
    cache_size: Context | None = None
    prompt_template: TemplateName | None = None
    chunk_size: Annotated[int, Field(ge=1, le=65_536), NUMBER] | None = None
    rope_scale: Annotated[float, Field(gt=0, le=1024), NUMBER] | None = None
    rope_alpha: Annotated[float, Field(gt=0, le=1024), NUMBER] | Literal["auto"] | None = None
    gpu_split: Annotated[list[Annotated[float, NUMBER]], Field(max_length=64)] | None = None
    gpu_split_auto: StrictBool | None = None
    tensor_parallel: StrictBool | None = None
    cache_mode: Annotated[str, Field(max_length=32)] | None = None
    vision: StrictBool | None = None
    backend: Annotated[str, Field(max_length=64)] | None = None
    skip_queue: StrictBool | None = None
    # Speculative decoding (llama.cpp): a smaller model with the same vocabulary.
    draft_model: TabbyDraftRequest | None = None
    # Our addition: SSE progress instead of one JSON answer (the Go client's paths).
    stream: StrictBool = False

    def model(self) -> str | None:
        return self.model_name or self.name


def _context(body: TabbyLoadRequest, notes: list[str]) -> int | None:
    """``max_seq_len`` is the context; ``cache_size`` stands in when it is alone."""
    if body.max_seq_len and body.cache_size and body.cache_size != body.max_seq_len:
        notes.append(
            f"cache_size {body.cache_size} was not applied: the KV cache holds the "
            f"context, max_seq_len {body.max_seq_len}"
        )
    return body.max_seq_len or body.cache_size


def _ignored(body: TabbyLoadRequest, entry: ModelEntry) -> list[str]:
    """Knobs without an equivalent here (neutral values are not worth a note)."""
    where = "the NPU runtime" if entry.format == "rkllm" else "llama.cpp on the CPU"
    notes = []
    if body.rope_scale is not None and body.rope_scale != 1.0:
        notes.append(f"rope_scale does not apply: {where} uses the model's own RoPE scaling")
    if body.rope_alpha not in (None, "auto", 1.0):
        notes.append(f"rope_alpha does not apply: {where} uses the model's own RoPE base")
    if body.gpu_split or body.gpu_split_auto or body.tensor_parallel:
        notes.append("gpu_split, gpu_split_auto and tensor_parallel do not apply: no GPU is used")
    if body.cache_mode is not None and body.cache_mode.upper() != "FP16":
        notes.append(f"cache_mode {body.cache_mode} does not apply: {where} keeps an FP16 cache")
    if body.chunk_size is not None and entry.format == "rkllm":
        notes.append("chunk_size does not apply: the NPU runtime prefills in its own chunks")
    if body.vision is not None:
        notes.append(
            "vision is not switched per load: a model sees when a projector (*mmproj*.gguf) "
            "or a vision encoder (.rknn) is paired with it; see use_vision in its card"
        )
    if body.draft_model is not None:
        notes.extend(_ignored_draft(body.draft_model))
    if body.backend is not None and body.backend not in ("llamacpp", "llama.cpp", "rkllm"):
        notes.append(f"backend {body.backend} does not apply: the file's format picks the backend")
    return notes


def _ignored_draft(draft: TabbyDraftRequest) -> list[str]:
    notes = []
    if draft.draft_rope_scale is not None and draft.draft_rope_scale != 1.0:
        notes.append("draft_rope_scale does not apply: the draft model's own RoPE scaling is used")
    if draft.draft_rope_alpha not in (None, "auto", 1.0):
        notes.append("draft_rope_alpha does not apply: the draft model's own RoPE base is used")
    if draft.draft_gpu_split:
        notes.append("draft_gpu_split does not apply: no GPU is used")
    if draft.draft_cache_mode is not None and draft.draft_cache_mode.upper() != "FP16":
        notes.append(f"draft_cache_mode {draft.draft_cache_mode} does not apply: FP16 cache")
    return notes


def _draft(
    body: TabbyLoadRequest, entry: ModelEntry, registry: ModelRegistry
) -> tuple[str | None, int | None]:
    """The draft model's catalogue id and the tokens drafted a step; refused up front
    when the model cannot use one (the engine checks the vocabularies when it loads)."""
    draft = body.draft_model
    if draft is None:
        return None, None
    if entry.format != "gguf":
        raise e.DraftIncompatible(
            f"speculative decoding needs llama.cpp: {entry.id} runs on the NPU runtime, "
            "which has no draft support",
            param="draft_model",
        )
    found = registry.resolve(draft.draft_model_name)
    if found.format != "gguf":
        raise e.DraftIncompatible(
            f"the draft model {found.id} is not a GGUF model", param="draft_model"
        )
    return found.id, draft.draft_num_tokens


async def plan_load(
    body: TabbyLoadRequest, entry: ModelEntry, config: Config, registry: ModelRegistry
) -> tuple[LoadOptions, list[str]]:
    """The load options the request asks for, and the notes on what does not apply."""
    draft_model, draft_tokens = _draft(body, entry, registry)
    notes = _ignored(body, entry)
    ctx = _context(body, notes)
    template_text = template_name = None
    if body.prompt_template is not None:
        library = TemplateLibrary(config.templates_dir)
        template = await asyncio.to_thread(library.get, body.prompt_template)
        template_text, template_name = template.text, template.name
    options = LoadOptions(
        ctx_size=ctx,
        batch_size=body.chunk_size if entry.format == "gguf" else None,
        chat_template=template_text,
        chat_template_name=template_name,
        draft_model=draft_model,
        draft_tokens=draft_tokens,
    )
    if notes:
        logger.info("load %s: %s", entry.id, "; ".join(notes))
    return options, notes
