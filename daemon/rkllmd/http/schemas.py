"""Typed request bodies of the OpenAI-compatible routes.

Unknown fields are ignored on purpose: OpenAI clients send extras (``user``,
``metadata``, ...). Known fields are validated strictly by range, and features
we do not implement are rejected with 400 instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

StopField = (
    Annotated[str, Field(min_length=1, max_length=256)]
    | Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=16)]
    | None
)


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(Body):
    type: str
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
    include_usage: bool = False


class Sampling(Body):
    max_tokens: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8
    top_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    top_k: Annotated[int, Field(ge=0, le=1000)] = 40
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1)] | None = None
    stop: StopField = None
    n: Annotated[int, Field(ge=1, le=1, description="only 1 is supported")] = 1
    ignore_eos: bool = False  # extension (as in vLLM/llama.cpp): generate to max_tokens
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: Literal[False] | None = Field(None, description="not supported")


class ChatCompletionRequest(Sampling):
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Any = None
    enable_thinking: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return value


class CompletionRequest(Sampling):
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    prompt: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[list[str], Field(min_length=1, max_length=1)]
    )
    echo: Literal[False] = False
    suffix: None = Field(None, description="not supported")

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(Body):
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    input: (
        Annotated[str, Field(max_length=1_048_576)]
        | Annotated[
            list[Annotated[str, Field(max_length=1_048_576)]], Field(min_length=1, max_length=256)
        ]
    )
    encoding_format: Literal["float", "base64"] = "float"


# --- management dialects ---------------------------------------------------------


class RockchipLoadRequest(Body):
    model: Annotated[str, Field(min_length=1, max_length=255)]
    max_context_len: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    num_npu_core: Annotated[int, Field(ge=1, le=3)] | None = None
    pin: bool | None = None


class TabbyLoadRequest(Body):
    model_name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    max_seq_len: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    prompt_template: Annotated[str, Field(max_length=65_536)] | None = None

    def model(self) -> str | None:
        return self.model_name or self.name


class SimpleChatConfig(Body):
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.8
    maxTokens: Annotated[int, Field(ge=1, le=1_048_576)] | None = None
    topP: Annotated[float, Field(ge=0.0, le=1.0)] = 0.95
    presencePenalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequencyPenalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0


class SimpleChatRequest(Body):
    model: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)] | None = None
    prompt: Annotated[str, Field(max_length=4_194_304)] | None = None
    config: SimpleChatConfig = SimpleChatConfig()


class DownloadRequest(Body):
    """TabbyAPI's download body; ``repo`` is accepted as an alias of ``repo_id``."""

    repo_id: Annotated[str, Field(min_length=3, max_length=200)] | None = None
    repo: Annotated[str, Field(min_length=3, max_length=200)] | None = None
    file: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    revision: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    repo_type: Literal["model"] = "model"
    include: Annotated[list[Annotated[str, Field(max_length=255)]], Field(max_length=64)] = []
    exclude: Annotated[list[Annotated[str, Field(max_length=255)]], Field(max_length=64)] = []
    token: Annotated[str, Field(max_length=1024)] | None = None
    folder_name: None = Field(None, description="not supported: pulls go to <owner>/<repo>")

    def repository(self) -> str:
        return self.repo_id or self.repo or ""
