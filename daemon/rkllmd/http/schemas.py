"""Typed request bodies of the OpenAI-compatible routes.

Unknown fields are ignored on purpose: OpenAI clients send extras (``user``,
``metadata``, ...). Known fields are validated strictly by range, and features
we do not implement are rejected with 400 instead of silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, field_validator

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


def _documented(pattern: str, max_length: int, min_length: int = 1) -> Any:
    return Field(
        min_length=min_length, max_length=max_length, json_schema_extra={"pattern": pattern}
    )


ModelName = Annotated[str, _documented(MODEL_NAME_PATTERN, 255)]
RepoId = Annotated[str, _documented(REPO_ID_PATTERN, 200, 3)]
Glob = Annotated[str, _documented(GLOB_PATTERN, 255)]


def _json_number(value: Any) -> Any:
    """JSON Schema says "5" and true are not numbers; pydantic's lax mode would take them."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


def _exactly_false(value: Any) -> Any:
    """``Literal[False]`` alone also takes 0 (0 == False)."""
    if value is not False:
        raise ValueError("not supported: only false is accepted")
    return value


NUMBER = BeforeValidator(_json_number)  # after Field(...), or the schema loses its bounds
NotSupported = Annotated[Literal[False], BeforeValidator(_exactly_false)]

StopField = (
    Annotated[str, Field(min_length=1, max_length=256)]
    | Annotated[list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=16)]
    | None
)


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


class Sampling(Body):
    max_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0), NUMBER] = 0.8
    top_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] = 0.95
    top_k: Annotated[int, Field(ge=0, le=1000), NUMBER] = 40
    min_p: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] = 0.05
    repeat_penalty: Annotated[float, Field(gt=0.0, le=10.0), NUMBER] = 1.0
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0
    seed: Annotated[int, Field(ge=-(2**63), le=2**64 - 1), NUMBER] | None = None
    stop: StopField = None
    n: Annotated[int, Field(ge=1, le=1, description="only 1 is supported"), NUMBER] = 1
    ignore_eos: StrictBool = False  # extension (as in vLLM/llama.cpp): generate to max_tokens
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logprobs: NotSupported | None = Field(None, description="not supported")


class ChatCompletionRequest(Sampling):
    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)]
    max_completion_tokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=128)] | None = None
    tool_choice: Any = None
    enable_thinking: StrictBool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _plain_text(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return value


class CompletionRequest(Sampling):
    model: ModelName | None = None
    prompt: (
        Annotated[str, Field(max_length=4_194_304)]
        | Annotated[list[str], Field(min_length=1, max_length=1)]
    )
    echo: NotSupported = False
    suffix: None = Field(None, description="not supported")

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


class EmbeddingRequest(Body):
    model: ModelName | None = None
    input: (
        # An empty text has nothing to embed (llama.cpp fails on it): refused as OpenAI does.
        Annotated[str, Field(min_length=1, max_length=1_048_576)]
        | Annotated[
            list[Annotated[str, Field(min_length=1, max_length=1_048_576)]],
            Field(min_length=1, max_length=256),
        ]
    )
    encoding_format: Literal["float", "base64"] = "float"


# --- management dialects ---------------------------------------------------------


class RockchipLoadRequest(Body):
    model: ModelName
    max_context_len: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    num_npu_core: Annotated[int, Field(ge=1, le=3), NUMBER] | None = None
    pin: StrictBool | None = None


class TabbyLoadRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["model_name"], "properties": {"model_name": {"type": "string"}}},
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
            ]
        },
    )

    model_name: ModelName | None = None
    name: ModelName | None = None
    max_seq_len: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    prompt_template: Annotated[str, Field(max_length=65_536)] | None = None

    def model(self) -> str | None:
        return self.model_name or self.name


class SimpleChatConfig(Body):
    temperature: Annotated[float, Field(ge=0.0, le=2.0), NUMBER] = 0.8
    maxTokens: Annotated[int, Field(ge=1, le=1_048_576), NUMBER] | None = None
    topP: Annotated[float, Field(ge=0.0, le=1.0), NUMBER] = 0.95
    presencePenalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0
    frequencyPenalty: Annotated[float, Field(ge=-2.0, le=2.0), NUMBER] = 0.0


class SimpleChatRequest(Body):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["messages"], "properties": {"messages": {"type": "array"}}},
                {"required": ["prompt"], "properties": {"prompt": {"type": "string"}}},
            ]
        },
    )

    model: ModelName | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1, max_length=4096)] | None = None
    prompt: Annotated[str, Field(max_length=4_194_304)] | None = None
    config: SimpleChatConfig = SimpleChatConfig()


class DownloadRequest(Body):
    """TabbyAPI's download body; ``repo`` is accepted as an alias of ``repo_id``."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "anyOf": [
                {"required": ["repo_id"], "properties": {"repo_id": {"type": "string"}}},
                {"required": ["repo"], "properties": {"repo": {"type": "string"}}},
            ]
        },
    )

    repo_id: RepoId | None = None
    repo: RepoId | None = None
    file: Annotated[str, _documented(REPO_FILE_PATTERN, 255)] | None = None
    revision: Annotated[str, _documented(REVISION_PATTERN, 255)] | None = None
    repo_type: Literal["model"] = "model"
    include: Annotated[list[Glob], Field(max_length=64)] = []
    exclude: Annotated[list[Glob], Field(max_length=64)] = []
    # Goes into an HTTP header: printable ASCII only (anything else broke the request).
    token: Annotated[str, Field(max_length=1024, pattern=r"^[\x21-\x7e]*$")] | None = None
    folder_name: None = Field(None, description="not supported: pulls go to <owner>/<repo>")

    def repository(self) -> str:
        return self.repo_id or self.repo or ""
