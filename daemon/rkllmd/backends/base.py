"""The seam between the worker and a native runtime.

Types here are plain dataclasses: they cross the worker pipe as JSON and carry
no transport concerns (wire schemas live in rpc/ and http/).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Per-load options; ``None`` means "the backend's configured default"."""

    ctx_size: int | None = None
    threads: int | None = None
    batch_size: int | None = None
    chat_template: str | None = None
    # RKLLM: NPU cores are fixed when a model is converted; a request for them is
    # reported in the model's props, not applied.
    npu_cores: int | None = None
    # RKLLM runtime selection (config [rkllm]); only ever set in the defaults.
    library: str | None = None
    runtime_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadOptions:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})


def pick_option(
    requested: int | None, configured: int | None, builtin: int, zero_means: int | None = 0
) -> int:
    """A numeric load option: the load request's value, else the configured default
    (``[llamacpp]``/``[rkllm]``), else the backend's built-in default.

    ``None`` is "not given" in every layer. 0 is an "automatic" setting whose meaning
    is the option's own: ``zero_means`` is the value it stands for, or ``None`` where the
    runtime has no automatic value, so that 0 counts as not given and the next layer
    decides. Each backend says at its call why 0 means what it does there.
    """
    for value in (requested, configured):
        if value == 0 and zero_means is not None:
            return zero_means
        if value:
            return value
    return builtin


@dataclass(frozen=True, slots=True)
class Sampling:
    max_tokens: int = 1024
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Keep generating past end-of-sequence until max_tokens (benchmarks, tests);
    # backends whose runtime cannot do this ignore it and say so in their props.
    ignore_eos: bool = False

    @classmethod
    def from_request(cls, fields: Any, max_tokens: int | None, default_max: int) -> Sampling:
        """From a validated wire body (RPC or HTTP) that names the fields as we do.

        A seed of -1 means "random", as in llama.cpp; others wrap to the runtimes'
        32-bit seeds. ``stop`` may be one string or a list.
        """
        stop = fields.stop
        seed = fields.seed
        return cls(
            max_tokens=max_tokens or default_max,
            temperature=fields.temperature,
            top_p=fields.top_p,
            top_k=fields.top_k,
            min_p=fields.min_p,
            repeat_penalty=fields.repeat_penalty,
            presence_penalty=fields.presence_penalty,
            frequency_penalty=fields.frequency_penalty,
            seed=None if seed is None or seed == -1 else seed % 2**32,
            stop=(stop,) if isinstance(stop, str) else tuple(stop or ()),
            ignore_eos=fields.ignore_eos,
        )


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    # OpenAI ``tool_calls`` of an assistant turn ({"id", "type", "function": {"name",
    # "arguments"}}) and the ``tool_call_id`` a tool result answers.
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates expect it."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=tuple(data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
        )


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A chat conversation to continue, or a raw prompt when ``prompt`` is set.

    ``tools`` are OpenAI function-tool definitions handed to the chat template
    (or the runtime's tool API); ``enable_thinking`` toggles reasoning output in
    templates that support it. Parsing tool calls and reasoning out of the text
    happens daemon-side, the same for every backend.
    """

    messages: tuple[ChatMessage, ...] = ()
    prompt: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[dict[str, Any], ...] = ()
    enable_thinking: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateRequest:
        sampling = dict(data.get("sampling") or {})
        sampling["stop"] = tuple(sampling.get("stop") or ())
        return cls(
            messages=tuple(ChatMessage.from_dict(m) for m in data.get("messages") or ()),
            prompt=data.get("prompt"),
            sampling=Sampling(**sampling),
            tools=tuple(data.get("tools") or ()),
            enable_thinking=data.get("enable_thinking"),
        )


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass(frozen=True, slots=True)
class GenerateResult:
    finish_reason: FinishReason
    usage: Usage
    # Runtime-measured figures when the backend has them (RKLLM: prefill/generate
    # time and tokens, peak memory).
    perf: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    vectors: list[list[float]]  # one L2-normalised vector per input
    prompt_tokens: int


EmitText = Callable[[str], None]


class Backend(Protocol):
    """What the worker needs from a runtime. All calls happen in the worker."""

    def load(self, path: Path, options: LoadOptions) -> dict[str, Any]:
        """Load the model; return its properties (context size, template, ...)."""
        ...

    def generate(
        self, request: GenerateRequest, emit: EmitText, cancel: threading.Event
    ) -> GenerateResult:
        """Stream text pieces through ``emit``; stop early once ``cancel`` is set."""
        ...

    def embed(self, texts: list[str]) -> EmbedResult:
        """Pooled, normalised embeddings of each text."""
        ...

    def close(self) -> None:
        """Free native resources; called exactly once, from the worker."""
        ...
