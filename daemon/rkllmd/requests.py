"""The domain's request and event types: what every layer hands to the next.

Plain frozen dataclasses with no transport concerns: the HTTP and RPC skins build
them from their wire schemas, the manager queues them, and they cross the worker
pipe as JSON (``to_dict``/``from_dict``), where the backends consume them.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

FinishReason = Literal["stop", "length", "abort"]


def _without_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None}


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What one load asks for; ``None`` means "the backend's configured default"."""

    ctx_size: int | None = None
    threads: int | None = None
    batch_size: int | None = None
    chat_template: str | None = None  # Jinja source (or, in config defaults, a family)
    # The name ``chat_template`` was found under (templates/), shown as the model's
    # prompt template; None when the text came inline or the model's own is used.
    chat_template_name: str | None = None
    # RKLLM: NPU cores are fixed when a model is converted; a request for them is
    # reported in the model's props, not applied.
    npu_cores: int | None = None
    # LoRA adapters to apply, by name (files of the models dir's lora/ folder), with
    # their scale.
    loras: tuple[tuple[str, float], ...] = ()
    # llama.cpp: generations decoded together in one context.
    parallel: int | None = None
    # llama.cpp speculative decoding: a smaller GGUF with the same vocabulary (its
    # path; the manager resolves a model name), or prompt lookup with n-grams of
    # this size; at most draft_tokens guesses a step.
    draft_model: str | None = None
    lookup_ngram: int | None = None
    draft_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = _without_none(asdict(self))
        if not self.loras:
            del data["loras"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadOptions:
        values: dict[str, Any] = {f.name: data.get(f.name) for f in fields(cls)}
        values["loras"] = tuple((str(n), float(s)) for n, s in data.get("loras") or ())
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BackendDefaults:
    """The configured defaults of one backend (``[llamacpp]`` or ``[rkllm]``)."""

    ctx_size: int | None = None
    threads: int | None = None
    batch_size: int | None = None
    chat_template: str | None = None
    # RKLLM runtime selection: the library to open and its version when the
    # library does not say.
    library: str | None = None
    runtime_version: str | None = None
    # librknnrt, the runtime of an .rkllm model's .rknn vision encoder.
    rknn_library: str | None = None
    # Where LoRA adapters named in the load options are (the models dir's lora/).
    lora_dir: str | None = None
    # llama.cpp: generations decoded together; speculative decoding by default.
    parallel: int | None = None
    draft_model: str | None = None
    lookup_ngram: int | None = None
    draft_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return _without_none(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackendDefaults:
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


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
    # The fields the request set itself (the rest are defaults): sampler presets
    # override only those it left alone, unless they force.
    given: tuple[str, ...] = ()
    # Token id -> bias added to its logit (OpenAI logit_bias; -100 bans the token).
    logit_bias: tuple[tuple[int, float], ...] = ()
    # A GBNF grammar (root rule "root") the output must follow: structured output and
    # forced tool calls, compiled daemon-side by ``rkllmd.structured``. Only backends
    # whose props say ``grammar`` apply it; the daemon never sends it to the others.
    grammar: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Sampling:
        values = dict(data)
        values["stop"] = tuple(values.get("stop") or ())
        values["given"] = tuple(values.get("given") or ())
        values["logit_bias"] = tuple(
            (int(token), float(bias)) for token, bias in values.get("logit_bias") or ()
        )
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ImageInput:
    """One image a message carries: its bytes as the client sent them (decoded from
    base64 and checked at the edge by ``rkllmd.images``), what they are, and how large
    they are. Backends decode the pixels themselves, in the worker."""

    data: bytes
    mime_type: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, Any]:
        # The worker pipe is JSON: the bytes travel as base64.
        return {
            "data": base64.b64encode(self.data).decode("ascii"),
            "mime_type": self.mime_type,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageInput:
        return cls(
            base64.b64decode(data["data"]),
            str(data["mime_type"]),
            int(data["width"]),
            int(data["height"]),
        )


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str
    # OpenAI ``tool_calls`` of an assistant turn ({"id", "type", "function": {"name",
    # "arguments"}}) and the ``tool_call_id`` a tool result answers.
    tool_calls: tuple[dict[str, Any], ...] = ()
    tool_call_id: str | None = None
    # Images that come with the text, in order. The backend places them before the
    # text of the message (each where its chat template puts an image); only models
    # whose props say ``vision`` get any (the manager refuses the rest).
    images: tuple[ImageInput, ...] = ()

    def to_template(self) -> dict[str, Any]:
        """The message as chat templates expect it."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = list(self.tool_calls)
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "role": self.role,
            "content": self.content,
            "tool_calls": list(self.tool_calls),
            "tool_call_id": self.tool_call_id,
        }
        if self.images:
            data["images"] = [image.to_dict() for image in self.images]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatMessage:
        return cls(
            role=data["role"],
            content=data.get("content") or "",
            tool_calls=tuple(data.get("tool_calls") or ()),
            tool_call_id=data.get("tool_call_id"),
            images=tuple(ImageInput.from_dict(i) for i in data.get("images") or ()),
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
    # A raw prompt given as token ids of the model's vocabulary (OpenAI completions).
    prompt_tokens: tuple[int, ...] | None = None
    # Fill in the middle: the text after the insertion point (models with FIM tokens).
    suffix: str | None = None
    sampling: Sampling = field(default_factory=Sampling)
    tools: tuple[dict[str, Any], ...] = ()
    enable_thinking: bool | None = None
    # Choices generated from the one prompt (llama.cpp: one prefill, the sequence
    # copied), and how many alternatives to report with each token's
    # log-probability (None: no log-probabilities).
    n: int = 1
    logprobs: int | None = None

    @property
    def images(self) -> tuple[ImageInput, ...]:
        """Every image of the conversation, in order."""
        return tuple(image for message in self.messages for image in message.images)

    def to_dict(self) -> dict[str, Any]:
        # Not asdict() over the messages: image bytes are not JSON (and not deep-copied).
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "messages"}
        data["sampling"] = asdict(self.sampling)
        data["messages"] = [message.to_dict() for message in self.messages]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerateRequest:
        return cls(
            messages=tuple(ChatMessage.from_dict(m) for m in data.get("messages") or ()),
            prompt=data.get("prompt"),
            prompt_tokens=_tokens(data.get("prompt_tokens")),
            suffix=data.get("suffix"),
            sampling=Sampling.from_dict(data.get("sampling") or {}),
            tools=tuple(data.get("tools") or ()),
            enable_thinking=data.get("enable_thinking"),
            n=int(data.get("n") or 1),
            logprobs=data.get("logprobs"),
        )


def _tokens(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(t) for t in value)


# What one embedding is asked for: a text, or token ids of the model's vocabulary.
EmbedItem = str | tuple[int, ...]


def embed_item_from_json(value: Any) -> EmbedItem:
    return value if isinstance(value, str) else tuple(int(t) for t in value)


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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            cached_tokens=int(data.get("cached_tokens", 0)),
        )


# --- what a generation streams back ------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A token's log-probability under the model (raw logits of its step), with the
    most likely alternatives at that step when asked for."""

    token: str
    logprob: float
    bytes: tuple[int, ...]
    top: tuple[TokenLogprob, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "logprob": self.logprob,
            "bytes": list(self.bytes),
            "top_logprobs": [t.to_dict() for t in self.top],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TokenLogprob:
        return cls(
            token=data["token"],
            logprob=float(data["logprob"]),
            bytes=tuple(data.get("bytes") or ()),
            top=tuple(cls.from_dict(t) for t in data.get("top_logprobs") or ()),
        )


@dataclass(frozen=True, slots=True)
class TokenEvent:
    text: str
    index: int = 0  # the choice (n > 1)
    # The tokens this text completes, when log-probabilities were asked for.
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass(frozen=True, slots=True)
class DoneEvent:
    finish_reason: FinishReason  # of choice 0
    usage: Usage  # summed over the choices
    # Runtime figures when there are any (RKLLM: timings, memory; llama.cpp: draft
    # tokens proposed and accepted).
    perf: dict[str, float] | None = None
    choices: tuple[FinishReason, ...] = ()  # every choice's finish reason when n > 1


GenerationEvent = TokenEvent | DoneEvent
