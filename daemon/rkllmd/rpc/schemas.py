"""Typed parameters of the control methods, validated before any work starts.

Strict types (no "5" for 5) and forbidden extra keys: this is an admin
interface, and a typo must fail loudly rather than be ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..wire import EmbedInput, SamplingFields

ModelName = Annotated[str, Field(min_length=1, max_length=255)]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoParams(Params):
    pass


class ModelParams(Params):
    model: ModelName


class LoadParams(Params):
    model: ModelName
    ctx_size: Annotated[int, Field(ge=0, le=1_048_576)] | None = None
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    batch_size: Annotated[int, Field(ge=1, le=65_536)] | None = None
    # A template name (templates/: chatml, llama3, ...) or Jinja source.
    chat_template: Annotated[str, Field(min_length=1, max_length=65_536)] | None = None
    npu_cores: Annotated[int, Field(ge=1, le=3)] | None = None  # reported, fixed at conversion
    # llama.cpp: generations at once, and speculative decoding (a draft model's name,
    # or prompt-lookup n-gram size; at most draft_tokens drafted a step).
    parallel: Annotated[int, Field(ge=1, le=64)] | None = None
    draft_model: ModelName | None = None
    lookup_ngram: Annotated[int, Field(ge=0, le=8)] | None = None
    draft_tokens: Annotated[int, Field(ge=1, le=64)] | None = None
    progress: bool = False
    # Load it as the separate embedding model (beside the chat model).
    embedding: bool = False


class UnloadParams(Params):
    embedding: bool = False  # the embedding model instead of the chat model


class Part(Params):
    """A piece of a message's content: text, or an image given as base64 (or a data:
    URL) with its MIME type (optional: the bytes tell)."""

    type: Literal["text", "image"]
    text: Annotated[str, Field(max_length=1_048_576)] | None = None
    data: Annotated[str, Field(max_length=16 * 1024 * 1024)] | None = None
    mime_type: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _filled(self) -> Part:
        if (self.type == "text") != (self.text is not None) or (self.type == "image") != (
            self.data is not None
        ):
            raise ValueError("a text part has text, an image part has data (and nothing else)")
        return self


class Message(Params):
    role: Literal["system", "user", "assistant", "tool"]
    content: (
        Annotated[str, Field(max_length=1_048_576)] | Annotated[list[Part], Field(max_length=256)]
    ) = ""
    # OpenAI shapes: an assistant turn's tool calls, and the call a tool result answers.
    tool_calls: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_call_id: Annotated[str, Field(max_length=256)] | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")

    def images(self) -> list[tuple[str, str | None]]:
        if isinstance(self.content, str):
            return []
        return [(p.data or "", p.mime_type) for p in self.content if p.type == "image"]


class ChatParams(Params, SamplingFields):
    model: ModelName | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=4096)]
    stream: bool = False
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None  # OpenAI tools
    enable_thinking: bool | None = None


Glob = Annotated[str, Field(min_length=1, max_length=256)]
Globs = Annotated[list[Glob], Field(max_length=64)]


class PullParams(Params):
    repo: Annotated[str, Field(min_length=3, max_length=200)]  # owner/name, checked later
    file: Annotated[str, Field(min_length=1, max_length=1024)] | None = None
    include: Globs | None = None
    exclude: Globs | None = None
    revision: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    progress: bool = False


class RemoveParams(Params):
    model: ModelName | None = None
    force: bool = False
    all: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> RemoveParams:
        if (self.model is None) == (not self.all):
            raise ValueError("give either model or all=true")
        return self


class EmbedParams(Params):
    model: ModelName | None = None
    input: EmbedInput
