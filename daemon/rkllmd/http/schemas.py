"""Wire-schema pieces every HTTP dialect shares: names, messages, sampling.

Each dialect keeps its own request bodies next to its routes (``dialects/``).
Unknown fields are ignored on purpose: OpenAI clients send extras (``user``,
``metadata``, ...). Known fields are validated strictly by range, and features
we do not implement are rejected with 400 instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

from ..wire import NUMBER, SamplingFields

# Documented in /openapi.json only (the registry, hub.py and selection.py enforce the
# same rules and pick the error codes); a fuzzer then knows what the daemon accepts.
# `[\s\S]*` instead of `.*` and a control-character lookahead: ECMA and Python agree.
MODEL_NAME_PATTERN = (
    r"^(?![\s\S]*[\x00-\x1f\x7f\\])(?![A-Za-z]:)(?!/)(?!(?:[\s\S]*/)?\.\.?(?:/|$))[\s\S]+$"
)
_HUB_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
REPO_ID_PATTERN = rf"^(?![\s\S]*(?:\.\.|--|\n))(?:{_HUB_NAME})/(?:{_HUB_NAME})$"
REVISION_PATTERN = r"^(?![\s\S]*(?:\.\.|\n))[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}$"
REPO_FILE_PATTERN = (
    r"^(?![\s\S]*[\x00-\x1f\x7f\\])(?!/)(?![\s\S]:)(?!(?:[\s\S]*/)?\.{0,2}(?:/|$))[\s\S]+$"
)
GLOB_PATTERN = r"^(?![\s\S]*[\x00-\x1f\\])[\s\S]+$"


def documented(pattern: str, max_length: int, min_length: int = 1) -> Any:
    return Field(
        min_length=min_length, max_length=max_length, json_schema_extra={"pattern": pattern}
    )


ModelName = Annotated[str, documented(MODEL_NAME_PATTERN, 255)]


def _exactly_false(value: Any) -> Any:
    """``Literal[False]`` alone also takes 0 (0 == False)."""
    if value is not False:
        raise ValueError("not supported: only false is accepted")
    return value


NotSupported = Annotated[Literal[False], BeforeValidator(_exactly_false)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Body):
    type: Annotated[str, Field(json_schema_extra={"enum": ["text"]})]
    text: str | None = None

    @field_validator("type")
    @classmethod
    def _text_only(cls, value: str) -> str:
        if value != "text":
            raise ValueError(f"content parts of type {value!r} are not supported (text only)")
        return value


class ChatMessageIn(Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Annotated[str, Field(max_length=4_194_304)] | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text or "" for part in self.content)
        return self.content or ""


class StreamOptions(Body):
    include_usage: StrictBool = False


class Sampling(Body, SamplingFields):
    """The sampling fields plus what OpenAI-style generation routes add to them."""

    # Choices from one prompt: llama.cpp up to its parallel sequences, the NPU 1.
    n: Annotated[int, Field(ge=1, le=8), NUMBER] = 1
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
